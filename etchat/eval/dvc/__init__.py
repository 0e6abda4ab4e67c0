"""Dense video captioning on YouCook2 and ActivityNet Captions: inference (`etchat.eval.dvc.infer`) and the official
scores (`python -m etchat.eval.dvc`, implemented in `evaluate`, `metrics`, `formats`)."""
