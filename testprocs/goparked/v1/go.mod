module goparked

go 1.26
