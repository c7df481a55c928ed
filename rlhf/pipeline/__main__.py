"""`python -m rlhf.pipeline --config CONFIG [--resume] [--set STAGE.key=value]`, for `ray job submit`."""
import sys

from rlhf.pipeline.runner import main

sys.exit(main())
