module gorecurse

go 1.26
