"""Stage 1, the suite: what to evaluate and how to ask for it.

An eval suite is a YAML file and JSONL data beside it; it holds no code.

- `load`: the suite's configuration, its samples and splits, and the file readers that
  name the file, line and field of every error;
- `prompts`: how a sample becomes a prompt (the prompt format and its rendering);
- `keys`: how an input is recognised across suites, pools and datasets (its
  normalised text, the input key).
"""
