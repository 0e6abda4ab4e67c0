"""A seeded generator of a small time-sensitive video data set, for running E.T. Chat end to end on a CPU.

Each video shows large, saturated coloured shapes (5 colours x 4 shapes) on a plain gray background, each placed in
its own cell of a 2x2 grid. A shape appears at an integer second ``start``, slides in one direction across its cell
and disappears after the integer second ``end``: it is visible on every frame whose time ``t`` satisfies
``start <= t <= end``, so at 1 fps it is on frames ``start .. end``. The colours within one video are distinct, so
"the red circle" names one contiguous span. Small white/gray shapes wander over the whole frame as distractors; they
are achromatic and never named.

Output layout (all annotation paths are relative to ``<out>``; consumers pass ``<out>`` as the image, video and
data folder)::

    <out>/videos/train/train_00000.mp4 ...   training videos (never used by the test split)
    <out>/videos/test/test_00000.mp4 ...     test videos
    <out>/images/image_00000.png ...         still images for stages 1-2
    <out>/stage1.json                        captions (template `plain`: human "<image>", gpt the caption)
    <out>/stage2.json                        QA conversations (phi3 template), a few text-only samples
    <out>/stage3.json                        ET-Instruct style samples with <vid> tokens and src/tgt seconds
    <out>/annotations/vid/etbench_<task>_synthetic.json   E.T. Bench style test split, one file per task
    <out>/annotations/qvhighlights/synthetic_test.jsonl   the test split as QVHighlights queries (Moment-DETR format)
    <out>/annotations/dvc/synthetic_test.json            the test split as dense captions (ActivityNet Captions layout)
    <out>/manifest.json                      config, counts and sizes; written last

Videos are 224x224 at 3 fps and last an integer number of seconds (20-90 by default), so at 1 fps frame index and
second coincide. All times in the annotations are integer seconds.

Usage: ``python -m etchat.toy.synthetic --output_dir data/synthetic --seed 0``. Rerunning with the same arguments reuses
the existing files; ``--overwrite`` forces regeneration.

Modules: `scenes` (what a video shows, drawn from seeded generators), `render` (frames and mp4 files), `wording`
(questions, answers and captions of each task), `benchmarks` (the QVHighlights and dense-captioning test files),
`dataset` (the stages, the test split and the manifest).
"""
