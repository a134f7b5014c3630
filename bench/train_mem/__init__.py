"""Peak training memory and speed: measured rows beside the planner's estimate, and guardtune's
SFT step against a plain PEFT loop (``bench/train_memory.py``)."""
