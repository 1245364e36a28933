/* token.c — token text, hashes and tokens-file lines (see token.h). */
#include "token.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

const char *const token_role_names[ROLE_COUNT] = { "tenant", "worker", "admin" };

static const char *const prefixes[] = { [TOKEN_FILE] = "hodei_", [TOKEN_SESSION] = "hodeis_" };

static int is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static int is_base64url(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
              || c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

int token_parse(const char *text, size_t len, struct token *out)
{
    for (int k = TOKEN_SESSION; k >= TOKEN_FILE; k--) {
        size_t p = strlen(prefixes[k]);
        if (len < p || memcmp(text, prefixes[k], p) != 0)
            continue;
        const char *id = text + p, *secret = id + TOKEN_ID_LEN + 1;
        if (len < p + TOKEN_ID_LEN + 1 || !is_lower_hex(id, TOKEN_ID_LEN)
            || id[TOKEN_ID_LEN] != '_')
            return -1;
        size_t slen = len - (size_t) (secret - text);
        if (slen < TOKEN_SECRET_MIN || slen > TOKEN_SECRET_MAX || !is_base64url(secret, slen))
            return -1;
        out->kind = (enum token_kind) k;
        memcpy(out->id, id, TOKEN_ID_LEN);
        out->id[TOKEN_ID_LEN] = '\0';
        out->secret = secret;
        out->secret_len = slen;
        return 0;
    }
    return -1;
}

void token_hash(const char *secret, size_t len, unsigned char out[TOKEN_HASH_LEN])
{
    unsigned int n = TOKEN_HASH_LEN;
    EVP_Digest(secret, len, out, &n, EVP_sha256(), NULL);
}

int token_hash_equal(const unsigned char a[TOKEN_HASH_LEN], const unsigned char b[TOKEN_HASH_LEN])
{
    return CRYPTO_memcmp(a, b, TOKEN_HASH_LEN) == 0;
}

static int random_bytes(unsigned char *buf, size_t n)
{
    while (n > 0) {
        ssize_t got = getrandom(buf, n, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        buf += got;
        n -= (size_t) got;
    }
    return 0;
}

int token_generate(enum token_kind kind, char *text, char id[TOKEN_ID_LEN + 1],
                   unsigned char hash[TOKEN_HASH_LEN])
{
    unsigned char raw[TOKEN_ID_LEN / 2 + TOKEN_SECRET_BYTES];
    char secret[4 * ((TOKEN_SECRET_BYTES + 2) / 3) + 1];
    if (random_bytes(raw, sizeof raw) < 0)
        return -1;
    for (int i = 0; i < TOKEN_ID_LEN / 2; i++)
        snprintf(id + 2 * i, 3, "%02x", raw[i]);
    /* base64url: the standard alphabet with '-' and '_', no padding */
    int n = EVP_EncodeBlock((unsigned char *) secret, raw + TOKEN_ID_LEN / 2, TOKEN_SECRET_BYTES);
    while (n > 0 && secret[n - 1] == '=')
        n--;
    secret[n] = '\0';
    for (char *c = secret; *c; c++)
        *c = *c == '+' ? '-' : *c == '/' ? '_' : *c;
    token_hash(secret, (size_t) n, hash);
    snprintf(text, TOKEN_MAX + 1, "%s%s_%s", prefixes[kind], id, secret);
    memset(raw, 0, sizeof raw);
    memset(secret, 0, sizeof secret);
    return 0;
}

int token_line_parse(const char *line, struct token_line *out, const char **why)
{
    line += strspn(line, " \t");
    if (!*line || *line == '#')
        return 0;
    char id[32], role[16], tenant[HODEI_ID_MAX + 2], hex[2 * TOKEN_HASH_LEN + 2];
    int end = 0;
    if (sscanf(line, "%31s %15s %65s %65s %n", id, role, tenant, hex, &end) != 4 || line[end]) {
        *why = "a line is <id> <role> <tenant|-> <sha256 hex>";
        return -1;
    }
    if (strlen(id) != TOKEN_ID_LEN || !is_lower_hex(id, TOKEN_ID_LEN)) {
        *why = "the id must be 12 lowercase hex digits";
        return -1;
    }
    int r = hodei_name_index(token_role_names, ROLE_COUNT, role);
    if (r < 0) {
        *why = "the role must be tenant, worker or admin";
        return -1;
    }
    int no_tenant = strcmp(tenant, "-") == 0;
    if (r == ROLE_TENANT ? no_tenant || !hodei_id_valid(tenant, strlen(tenant))
                           || strcmp(tenant, HODEI_OVERFLOW_LABEL) == 0
                         : !no_tenant) {
        *why = r == ROLE_TENANT ? "a tenant token names its tenant ([A-Za-z0-9._:-]{1,64})"
                                : "only tenant tokens name a tenant ('-' otherwise)";
        return -1;
    }
    if (strlen(hex) != 2 * TOKEN_HASH_LEN || !is_lower_hex(hex, 2 * TOKEN_HASH_LEN)) {
        *why = "the hash must be 64 lowercase hex digits";
        return -1;
    }
    memcpy(out->id, id, TOKEN_ID_LEN + 1);
    out->role = (enum token_role) r;
    snprintf(out->tenant, sizeof out->tenant, "%s", no_tenant ? "" : tenant);
    for (int i = 0; i < TOKEN_HASH_LEN; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out->hash[i] = (unsigned char) v;
    }
    return 1;
}

void token_line_format(const struct token_line *t, char *buf, size_t len)
{
    char hex[2 * TOKEN_HASH_LEN + 1];
    for (int i = 0; i < TOKEN_HASH_LEN; i++)
        snprintf(hex + 2 * i, 3, "%02x", t->hash[i]);
    snprintf(buf, len, "%s %s %s %s\n", t->id, token_role_names[t->role],
             t->tenant[0] ? t->tenant : "-", hex);
}
