import sys
from pathlib import Path

# the tests import expectations.py and ddp_worker.py from this folder
sys.path.insert(0, str(Path(__file__).parent))
