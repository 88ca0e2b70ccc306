module memtrace.test/goleaks

go 1.19
