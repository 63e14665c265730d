from msrdsl.cli import main

main()
