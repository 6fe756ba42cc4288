"""Everything that scores an ArchConfig: static metrics now; the task suite and latency predictors
join here (installed as `star.evaluators`)."""
