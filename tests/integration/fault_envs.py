"""An environment that kills its own actor process once (marker file in `env_kwargs.marker`), so the
driver must notice, wait for Ray's restart, and rerun the generate phase."""
from __future__ import annotations

import os

from rlhf.envs.base import StepResult
from rlhf.envs.tools import ToolEnv


class DyingOnceToolEnv(ToolEnv):
    def __init__(self, marker: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.marker = marker

    def step(self, response: str) -> StepResult:
        if not os.path.exists(self.marker):
            with open(self.marker, "w") as fh:
                fh.write(str(os.getpid()))
            os._exit(1)  # the env actor dies mid-episode
        return super().step(response)
