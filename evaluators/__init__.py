"""Everything that scores an ArchConfig (installed as `star.evaluators`): static metrics, the 50-task
suite and its proxy trainer, device latency/memory models, and a synthetic stand-in for testing the
search machinery."""
