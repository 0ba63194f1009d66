"""``python -m bench.reliability [--only NAME ...] [--quick] [--output PATH]``"""

from bench.reliability.runner import main

raise SystemExit(main())
