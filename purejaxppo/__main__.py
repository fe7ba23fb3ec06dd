from purejaxppo.cli import main

main()
