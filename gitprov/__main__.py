from gitprov.cli import main

raise SystemExit(main())
