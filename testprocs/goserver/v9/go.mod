module goserver

go 1.26
