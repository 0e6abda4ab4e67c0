"""Metric tools shared by the benchmarks: sentence similarity (all-MiniLM-L6-v2) and the caption metrics of
pycocoevalcap (PTB tokenizer, BLEU, METEOR, ROUGE-L, CIDEr)."""
