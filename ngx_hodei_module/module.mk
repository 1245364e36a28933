# ngx_hodei_module/: the nginx dynamic module, built against Debian's nginx sources
# (nginx-dev) with the same configure flags as /usr/sbin/nginx (--with-compat).

NGX_SRC         := /usr/share/nginx/src
NGX_BUILD       := $(BUILD)/nginx-src
NGX_CONFIGURED  := $(NGX_BUILD)/.configured
NGX_MODULE_SO   := $(BUILD)/ngx_http_hodei_module.so
NGX_MODULE_SRCS := $(wildcard ngx_hodei_module/*.c ngx_hodei_module/*.h) \
                   $(SHM_SRCS) $(wildcard shm/*.h)
# Several builds may run at once in one tree: they take turns in the nginx tree.
NGX_LOCK        := flock $(BUILD)/.nginx-src.lock

# Debian builds nginx and its module packages with these (dpkg-buildflags); conf_flags leaves
# them out, and nginx's own default is -O.
NGX_CC_OPT      := -g -O2 -fstack-protector-strong -Wformat -Werror=format-security -fPIC \
                   -D_FORTIFY_SOURCE=2

# Configured once; again only when the addon's source list (config) changes.
$(NGX_CONFIGURED): config ngx_hodei_module/module.mk | $(BUILD)
	$(NGX_LOCK) bash -c 'set -e; rm -rf $(NGX_BUILD); cp -a $(NGX_SRC) $(NGX_BUILD); \
	    cd $(NGX_BUILD); source ./conf_flags; \
	    ./configure "$${NGX_CONF_FLAGS[@]}" --with-cc-opt="$(NGX_CC_OPT)" \
	        --add-dynamic-module=$(CURDIR) >configure.log'
	touch $@

# Installed by rename: running nginx processes keep the file they mapped.
$(NGX_MODULE_SO): $(NGX_CONFIGURED) $(NGX_MODULE_SRCS)
	$(NGX_LOCK) $(MAKE) -C $(NGX_BUILD) -f objs/Makefile modules
	cp $(NGX_BUILD)/objs/ngx_http_hodei_module.so $@.tmp
	mv -f $@.tmp $@

BINS += $(NGX_MODULE_SO)
