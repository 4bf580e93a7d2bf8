import sys
from pathlib import Path

# Helper modules (ddp_harness, toy_models, data_utils) live beside the tests and must
# also import in spawned DDP ranks, which inherit sys.path.
sys.path.insert(0, str(Path(__file__).parent))
