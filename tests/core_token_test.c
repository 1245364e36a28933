/* core_token_test.c — token text and tokens-file lines (core/token.c), and the tokens file as
 * the daemon reads it (core/auth.c): modes, malformed lines, duplicates, checks and reload. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <urcu-bp.h>

#include "auth.h"
#include "log.h"
#include "token.h"

static void test_parse(void **state)
{
    struct token t;
    char text[TOKEN_MAX + 1], id[TOKEN_ID_LEN + 1];
    unsigned char hash[TOKEN_HASH_LEN], again[TOKEN_HASH_LEN];
    assert_int_equal(token_generate(TOKEN_FILE, text, id, hash), 0);
    assert_int_equal(strlen(text), 6 + 12 + 1 + 43);
    assert_int_equal(token_parse(text, strlen(text), &t), 0);
    assert_int_equal(t.kind, TOKEN_FILE);
    assert_string_equal(t.id, id);
    token_hash(t.secret, t.secret_len, again);
    assert_true(token_hash_equal(hash, again));
    again[31] ^= 1;
    assert_false(token_hash_equal(hash, again));
    assert_int_equal(token_generate(TOKEN_SESSION, text, id, hash), 0);
    assert_int_equal(token_parse(text, strlen(text), &t), 0);
    assert_int_equal(t.kind, TOKEN_SESSION);
    static const char *const bad[] = {
        "", "hodei_", "hodei_0123456789ab", "hodei_0123456789AB_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "hodei_0123456789ab_short", "hodei_0123456789ab-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "hodei_0123456789ab_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa+", "Bearer x",
        "hodex_0123456789ab_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(token_parse(bad[i], strlen(bad[i]), &t), -1);
}

static void test_lines(void **state)
{
    struct token_line tl;
    const char *why;
    char line[200];
    assert_int_equal(token_line_parse("", &tl, &why), 0);
    assert_int_equal(token_line_parse("  # a comment", &tl, &why), 0);
    const char *ok = "0123456789ab tenant acme "
                     "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    assert_int_equal(token_line_parse(ok, &tl, &why), 1);
    assert_int_equal(tl.role, ROLE_TENANT);
    assert_string_equal(tl.tenant, "acme");
    assert_int_equal(tl.hash[31], 0xff);
    token_line_format(&tl, line, sizeof line);
    assert_int_equal(strncmp(line, ok, strlen(ok)), 0);
    assert_string_equal(line + strlen(ok), "\n");
    static const char *const bad[] = {
        "0123456789ab tenant - 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        "0123456789ab admin acme 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        "0123456789ab root - 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        "0123456789AB admin - 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        "0123456789ab admin - 0011",
        "0123456789ab admin -",
        "0123456789ab admin - 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff x",
        "0123456789ab tenant __overflow__ 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = NULL;
        assert_int_equal(token_line_parse(bad[i], &tl, &why), -1);
        assert_non_null(why);
    }
}

/* Writes a tokens file with mode; returns the tokens' texts. */
static void write_file(const char *path, int mode, int n, char texts[][TOKEN_MAX + 1],
                       const char *extra)
{
    FILE *f = fopen(path, "w");
    for (int i = 0; i < n; i++) {
        struct token_line tl = { .role = i == 0 ? ROLE_ADMIN : ROLE_TENANT };
        if (i)
            strcpy(tl.tenant, "acme");
        assert_int_equal(token_generate(TOKEN_FILE, texts[i], tl.id, tl.hash), 0);
        char line[200];
        token_line_format(&tl, line, sizeof line);
        fputs(line, f);
    }
    if (extra)
        fputs(extra, f);
    fclose(f);
    chmod(path, mode);
}

static int check(struct auth *a, const char *text, struct principal *p, enum hodei_auth_failure *why)
{
    struct token t;
    assert_int_equal(token_parse(text, strlen(text), &t), 0);
    return auth_check(a, &t, p, why);
}

static void test_auth_file(void **state)
{
    char path[] = "/tmp/hodei-token-test-XXXXXX", err[512];
    int fd = mkstemp(path);
    close(fd);
    char texts[3][TOKEN_MAX + 1];
    struct principal p;
    enum hodei_auth_failure why;
    rcu_register_thread();

    write_file(path, 0644, 2, texts, NULL);
    assert_null(auth_open(path, err, sizeof err));
    assert_non_null(strstr(err, "others may read or write it"));
    write_file(path, 0600, 2, texts, "not a line\n");
    assert_null(auth_open(path, err, sizeof err));
    assert_non_null(strstr(err, ":3: "));
    write_file(path, 0640, 2, texts, NULL);
    struct auth *a = auth_open(path, err, sizeof err);
    assert_non_null(a);
    assert_int_equal(check(a, texts[0], &p, &why), 0);
    assert_int_equal(p.kind, PRINCIPAL_ADMIN);
    assert_int_equal(check(a, texts[1], &p, &why), 0);
    assert_int_equal(p.kind, PRINCIPAL_TENANT);
    assert_string_equal(p.tenant, "acme");
    char wrong[TOKEN_MAX + 1];
    strcpy(wrong, texts[1]);
    wrong[strlen(wrong) - 1] = wrong[strlen(wrong) - 1] == 'A' ? 'B' : 'A';
    assert_int_equal(check(a, wrong, &p, &why), -1);
    assert_int_equal(why, HODEI_AUTH_BAD_SECRET);

    /* a reload: the new file's tokens only; a bad file keeps the old ones */
    char old_admin[TOKEN_MAX + 1];
    strcpy(old_admin, texts[0]);
    write_file(path, 0600, 1, texts, NULL);
    assert_int_equal(auth_reload(a, err, sizeof err), 0);
    assert_int_equal(check(a, old_admin, &p, &why), -1);
    assert_int_equal(why, HODEI_AUTH_UNKNOWN);
    assert_int_equal(check(a, texts[0], &p, &why), 0);
    char dup[400];
    FILE *f = fopen(path, "r");
    size_t n = fread(dup, 1, sizeof dup - 1, f);
    fclose(f);
    dup[n] = '\0';
    write_file(path, 0600, 0, texts, NULL);
    f = fopen(path, "w");
    fprintf(f, "%s%s", dup, dup);
    fclose(f);
    assert_int_equal(auth_reload(a, err, sizeof err), -1);
    assert_non_null(strstr(err, "appears twice"));
    assert_int_equal(check(a, texts[0], &p, &why), 0);   /* the previous table stays */
    auth_free(a);
    unlink(path);
}

int main(void)
{
    log_threshold = LOG_WARN;   /* the reads it logs are not the test's output */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_lines),
        cmocka_unit_test(test_auth_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
