"""The results report: ``python -m etchat.eval.report RUN [RUN ...] --out DIR`` (docs/design.md §18).

`runs` reads scored prediction folders, `published` the published tables kept in ``published/``, `bootstrap` draws
the resamples over videos, `analysis` computes values, intervals, seed spreads and paired differences, `figures`
and `document` draw and write them, `cli` is the command.
"""
