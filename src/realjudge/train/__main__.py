"""``python -m realjudge.train ...`` (also ``accelerate launch -m realjudge.train ...``)."""

from realjudge.train.entry import main

raise SystemExit(main())
