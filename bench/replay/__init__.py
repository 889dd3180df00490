"""The workload replay benchmark: one seeded, compressed day of spikes replayed once per kind
of cleanup, and what the host went through under each (`python -m bench.replay`)."""
