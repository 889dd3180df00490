"""The command line's vocabulary: its exit codes and task names, shared by the parser
(`cli`) and the commands it loads (`commands`, `checks`) without an import circle."""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
# Ghosts first: a ghost killed now is a stopped container for a later sweep, whose removal
# leaves its image and volumes unused for a later prune. `all` runs them in this order.
TASKS = ("kill-ghosts", "remove-stopped", "prune-unused")
ALL_TASKS = "all"
