# conf/conf.mk — `make install [PREFIX=/usr/local] [DESTDIR=]`.
#
# PREFIX places the programs only.  The rest goes where Debian looks for it whatever the
# prefix: nginx loads modules from /usr/lib/nginx/modules and module snippets from
# /etc/nginx/modules-enabled, systemd reads units from /lib/systemd/system, users from
# /usr/lib/sysusers.d and file modes from /usr/lib/tmpfiles.d; the units' ExecStart lines are
# rewritten to the chosen PREFIX.  An existing tokens file is never replaced: it holds the
# operator's tokens; a new one is empty and private (0600).

HODEI_PROGRAMS      := hodei-scheduler hodei-worker hodeictl hodei-metrics
HODEI_MODULE        := $(BUILD)/ngx_http_hodei_module.so
NGINX_MODULES_DIR   := /usr/lib/nginx/modules
NGINX_MODULES_AVAIL := /usr/share/nginx/modules-available
SYSTEMD_UNIT_DIR    := /lib/systemd/system
HODEI_CONF_DIR      := /etc/hodei

INSTALL_TARGETS += install-hodei

.PHONY: install-hodei
install-hodei: $(addprefix $(BUILD)/,$(HODEI_PROGRAMS)) $(HODEI_MODULE)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(addprefix $(BUILD)/,$(HODEI_PROGRAMS)) $(DESTDIR)$(PREFIX)/bin/
	install -D -m 0644 $(HODEI_MODULE) $(DESTDIR)$(NGINX_MODULES_DIR)/ngx_http_hodei_module.so
	install -D -m 0644 conf/nginx/mod-http-hodei.conf $(DESTDIR)$(NGINX_MODULES_AVAIL)/mod-http-hodei.conf
	install -d $(DESTDIR)/etc/nginx/modules-enabled
	ln -sfn $(NGINX_MODULES_AVAIL)/mod-http-hodei.conf $(DESTDIR)/etc/nginx/modules-enabled/50-mod-http-hodei.conf
	install -D -m 0644 conf/nginx/hodei.conf $(DESTDIR)/etc/nginx/sites-available/hodei.conf
	install -D -m 0644 conf/nginx/hodei-api.conf $(DESTDIR)/etc/nginx/snippets/hodei-api.conf
	install -d $(DESTDIR)$(HODEI_CONF_DIR)/grafana
	install -m 0644 conf/scheduler.json conf/prometheus.yml conf/hodei.rules.yml \
	    conf/hodei.native.rules.yml $(DESTDIR)$(HODEI_CONF_DIR)/
	install -m 0644 conf/grafana/hodei.json $(DESTDIR)$(HODEI_CONF_DIR)/grafana/
	[ -e $(DESTDIR)$(HODEI_CONF_DIR)/tokens ] || install -m 0600 /dev/null $(DESTDIR)$(HODEI_CONF_DIR)/tokens
	install -d $(DESTDIR)$(SYSTEMD_UNIT_DIR)
	for u in hodei-scheduler.service hodei-worker@.service; do \
	    sed 's|/usr/local/bin/|$(PREFIX)/bin/|g' conf/systemd/$$u > $(DESTDIR)$(SYSTEMD_UNIT_DIR)/$$u \
	    && chmod 0644 $(DESTDIR)$(SYSTEMD_UNIT_DIR)/$$u || exit 1; \
	done
	install -D -m 0644 conf/systemd/hodei.sysusers.conf $(DESTDIR)/usr/lib/sysusers.d/hodei.conf
	install -D -m 0644 conf/systemd/hodei.tmpfiles.conf $(DESTDIR)/usr/lib/tmpfiles.d/hodei.conf
