from foliobench.cli import main

raise SystemExit(main())
