# nginx-side benchmarks: scrape vs static file, log-phase overhead (wrk and callgrind).
.PHONY: bench-nginx
bench-nginx: $(BUILD)/ngx_http_hodei_module.so $(BUILD)/hodei-shm-fill
	perl bench/nginx_bench.pl

BENCH_TARGETS += bench-nginx
