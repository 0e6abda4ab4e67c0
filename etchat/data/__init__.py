"""From files to model inputs: video and image reading (`video`), frame transforms (`transforms`), prompts and
training labels (`conversation`, `tokenization`), and the training set, its collator and sampler."""
