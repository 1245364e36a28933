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
	    ./configure "$${NGX_CONF_FLAGS[@]}" --with-cc-opt="$(NGX_CC_OPT) -Werror" \
	        --add-dynamic-module=$(CURDIR) >configure.log'
	touch $@

# Installed by rename: running nginx processes keep the file they mapped.
$(NGX_MODULE_SO): $(NGX_CONFIGURED) $(NGX_MODULE_SRCS)
	$(NGX_LOCK) $(MAKE) -C $(NGX_BUILD) -f objs/Makefile modules
	cp $(NGX_BUILD)/objs/ngx_http_hodei_module.so $@.tmp
	mv -f $@.tmp $@

BINS += $(NGX_MODULE_SO)

# `make portability`: the module against a second, newer nginx, Debian 13's nginx-dev 1.26
# sources configured with the flags Debian 13 builds its nginx with (HTTP/3 among them),
# compiled with -Werror.  The package is a build fixture kept outside the repository and never
# downloaded: NGX_NEWER_DEB names it, by default the one beside the checkout.
NGX_NEWER_DEB   ?= $(firstword $(wildcard $(CURDIR)/../shared/vendor/nginx-dev_*.deb \
                                          $(CURDIR)/../../shared/vendor/nginx-dev_*.deb))
NGX_NEWER       := $(BUILD)/nginx-newer
NGX_NEWER_SRC   := $(NGX_NEWER)/usr/share/nginx/src

$(NGX_NEWER)/.configured: $(NGX_NEWER_DEB) config ngx_hodei_module/module.mk | $(BUILD)
	@test -n "$(NGX_NEWER_DEB)" || { echo "portability: no newer nginx-dev package" \
	    "(NGX_NEWER_DEB=PATH/nginx-dev_VERSION_all.deb)" >&2; exit 1; }
	rm -rf $(NGX_NEWER)
	dpkg-deb -x $(NGX_NEWER_DEB) $(NGX_NEWER)
	cd $(NGX_NEWER_SRC) && bash -c 'set -e; source ./conf_flags; \
	    ./configure "$${NGX_CONF_FLAGS[@]}" --with-cc-opt="$(NGX_CC_OPT) -Werror" \
	        --add-dynamic-module=$(CURDIR) >configure.log 2>&1 || { tail -20 configure.log; exit 1; }'
	touch $@

.PHONY: portability
portability: $(NGX_NEWER)/.configured
	$(MAKE) -C $(NGX_NEWER_SRC) -f objs/Makefile modules
	@echo "portability: ngx_http_hodei_module builds with -Werror against nginx" \
	    "$$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' $(NGX_NEWER_SRC)/src/core/nginx.h)" \
	    "($(notdir $(NGX_NEWER_DEB)), HTTP/3 on)"
