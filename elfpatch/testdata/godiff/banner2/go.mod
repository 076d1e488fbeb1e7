module banner

go 1.26
