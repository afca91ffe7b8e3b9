from vidseq.cli import main

main()
