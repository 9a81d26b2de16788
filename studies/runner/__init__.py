"""Runs the study declarations beside it on Ray Tune: the command line (harness), what a trial is (trial),
the trainable, the Tuner wiring (tuner) and where Ray runs (runtime)."""
