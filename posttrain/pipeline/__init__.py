"""Recipes: the pipeline config, the stage runner, the run report, and the demo drivers
that compose phases (`posttrain demo`, `make align-demo`)."""
