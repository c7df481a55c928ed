"""An environment that kills its own actor process once (marker file in `env_kwargs.marker`), so the
driver must notice, wait for Ray's restart, and rerun the generate phase. `after_resets` delays the
death to the first step of an episode reset after that many resets in the process (e.g. past the
step-0 evaluation and step 1, into the episodes played early for step 2)."""
from __future__ import annotations

import os
from typing import Optional

from rlhf.envs.base import StepResult
from rlhf.envs.tools import ToolEnv


class DyingOnceToolEnv(ToolEnv):
    resets_in_process = 0

    def __init__(self, marker: str, after_resets: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.marker = marker
        self.after_resets = after_resets
        self.reset_number = 0

    def reset(self, row: dict) -> Optional[str]:
        DyingOnceToolEnv.resets_in_process += 1
        self.reset_number = DyingOnceToolEnv.resets_in_process
        return super().reset(row)

    def step(self, response: str) -> StepResult:
        if self.reset_number > self.after_resets and not os.path.exists(self.marker):
            with open(self.marker, "w") as fh:
                fh.write(str(os.getpid()))
            os._exit(1)  # the env actor dies mid-episode
        return super().step(response)
