from webtier.cli import main

main()
