"""Built-in trainers: `lora`, `ia3` (peft adapters) and `full` (full fine-tuning).

All three run the engine in `harness.train` (TRL's SFTTrainer on the instruction
template, loss on the response only) and differ only in what they train and save.
"""
