"""Runs the study declarations beside it on Ray Tune. A study is declared with `study.Study`; `harness` puts the
rest in order: the command line (`cli`), the trial configurations (`space`), the data checks (`data_checks`), the
experiment's files (`experiment`), Ray Tune (`tuner`: the stage-1 phase (`stage1`), then the main trials
(`trainable`), each one (config, category, seed) as `trial` says, writing to Tune through `tune_io`), the report
(`report`); where Ray runs: `runtime`, `launch` (--cluster), `storage`."""
