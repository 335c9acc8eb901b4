"""Stage 1, the suite: what to evaluate and how to ask for it.

An eval suite is a YAML file and JSONL data beside it; it holds no code.

- `config`: the pydantic models of suite.yaml and of the rows of its data;
- `files`: the readers of YAML and JSONL files whose errors name file, line and field;
- `load`: finding and loading a suite, its samples and its splits;
- `prompts`: how a sample becomes a prompt (the prompt format and its rendering);
- `keys`: how an input is recognised across suites, pools and datasets (its
  normalised text, the input key).
"""
