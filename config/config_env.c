/*
 * kdedup - configuration: interpolation (${VAR}, ${VAR:-default},
 * ${file:PATH}, $${) and the secrets it took, never shown again (redaction).
 */
#include "config/config_int.h"

#include <cjson/cJSON.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void kd_cfg_env_destroy(kd_config_env *env) {
    if (!env)
        return;
    for (size_t i = 0; i < env->nsecrets; i++) {
        free(env->secrets[i].ref);
        free(env->secrets[i].value);
    }
    for (size_t i = 0; i < env->norigins; i++) {
        free(env->origins[i].path);
        free(env->origins[i].text);
    }
    for (size_t i = 0; i < env->nunresolved; i++)
        free(env->unresolved[i]);
    free(env->unresolved);
    free(env->secrets);
    free(env->origins);
    cJSON_Delete(env->routes);
    cJSON_Delete(env->fixed);
    free(env);
}

/* Remembers a value taken from ref (once per ref and value). */
static bool env_add_secret(kd_config_env *env, const char *ref, size_t reflen,
                           const char *value, size_t len) {
    secret *grown;

    for (size_t i = 0; i < env->nsecrets; i++)
        if (strlen(env->secrets[i].ref) == reflen &&
            !memcmp(env->secrets[i].ref, ref, reflen) &&
            strlen(env->secrets[i].value) == len &&
            !memcmp(env->secrets[i].value, value, len))
            return true;
    if (!(grown = realloc(env->secrets, (env->nsecrets + 1) * sizeof(*grown))))
        return false;
    env->secrets = grown;
    grown = &env->secrets[env->nsecrets];
    grown->ref = strndup(ref, reflen);
    grown->value = strndup(value, len);
    if (!grown->ref || !grown->value) {
        free(grown->ref);
        free(grown->value);
        return false;
    }
    env->nsecrets++;
    return true;
}

static bool env_add_origin(kd_config_env *env, const char *path, const char *text) {
    origin *grown = realloc(env->origins, (env->norigins + 1) * sizeof(*grown));

    if (!grown)
        return false;
    env->origins = grown;
    grown = &env->origins[env->norigins];
    grown->path = strdup(path);
    grown->text = strdup(text);
    if (!grown->path || !grown->text) {
        free(grown->path);
        free(grown->text);
        return false;
    }
    env->norigins++;
    return true;
}

/* Offline: remembers that path's value holds a ${...} that is not there. */
static bool env_add_unresolved(kd_config_env *env, const char *path) {
    char **grown;

    for (size_t i = 0; i < env->nunresolved; i++)
        if (!strcmp(env->unresolved[i], path))
            return true;
    if (!(grown = realloc(env->unresolved, (env->nunresolved + 1) * sizeof(*grown))))
        return false;
    env->unresolved = grown;
    return (grown[env->nunresolved] = strdup(path)) && ++env->nunresolved;
}

bool kd_cfg_env_is_unresolved(const kd_config_env *env, const char *path) {
    for (size_t i = 0; env && i < env->nunresolved; i++)
        if (!strcmp(env->unresolved[i], path))
            return true;
    return false;
}

const char *kd_cfg_env_template(const kd_config_env *env, const char *path) {
    for (size_t i = 0; env && i < env->norigins; i++)
        if (!strcmp(env->origins[i].path, path))
            return env->origins[i].text;
    return NULL;
}

/* A string value as it grows, bounded by KD_CONFIG_MAX_VALUE_BYTES. */
typedef struct strbuf {
    char *s;
    size_t len, cap;
} strbuf;

static bool strbuf_add(ctx *c, const char *path, strbuf *b, const char *add, size_t n) {
    char *grown;

    if (n > KD_CONFIG_MAX_VALUE_BYTES - b->len)
        return kd_cfg_fail(c, path, "expands to more than %d bytes",
                           KD_CONFIG_MAX_VALUE_BYTES);
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;

        if (!(grown = realloc(b->s, cap)))
            return kd_cfg_fail(c, path, "out of memory");
        b->s = grown;
        b->cap = cap;
    }
    memcpy(b->s + b->len, add, n);
    b->len += n;
    b->s[b->len] = '\0';
    return true;
}

/* Adds what the environment or a file gave for ref to the value, counted
 * against the file's budget; remembered as never to be shown when path
 * names a secret (a broker list or a topic name is shown as it is). */
static bool add_outside(ctx *c, const char *path, strbuf *b, const char *ref,
                        size_t reflen, const char *value, size_t len) {
    if (len > KD_CONFIG_MAX_EXPANDED_BYTES - c->env->expanded)
        return kd_cfg_fail(c, path,
                           "the environment and files add more than %d bytes to the "
                           "config in all",
                           KD_CONFIG_MAX_EXPANDED_BYTES);
    c->env->expanded += len;
    if (kd_config_is_secret(path) && !env_add_secret(c->env, ref, reflen, value, len))
        return kd_cfg_fail(c, path, "out of memory");
    return strbuf_add(c, path, b, value, len);
}

/* Offline, a ${...} that is not there: kept as written, and path noted as
 * unresolved (its value is not checked). */
static bool unresolved(ctx *c, const char *path, strbuf *b, const char *ref,
                       size_t reflen) {
    if (!env_add_unresolved(c->env, path))
        return kd_cfg_fail(c, path, "out of memory");
    return strbuf_add(c, path, b, ref, reflen);
}

/* ${file:PATH}: the file's content, one trailing newline dropped. Only
 * regular files (a FIFO would block the start), at most
 * KD_CONFIG_MAX_VALUE_BYTES; the content is never shown. */
static bool expand_file(ctx *c, const char *path, strbuf *b, const char *ref,
                        size_t reflen) {
    char fname[MAX_PATH], *data = NULL;
    struct stat st;
    size_t len = 0, plen = reflen - 8; /* "${file:" ... "}" */
    ssize_t n;
    int fd;
    bool ok;

    if (plen == 0 || plen >= sizeof(fname))
        return kd_cfg_fail(c, path, "expected ${file:PATH} with a path of 1 to %d bytes",
                           MAX_PATH - 1);
    memcpy(fname, ref + 7, plen);
    fname[plen] = '\0';
    if ((fd = open(fname, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0 &&
        (c->flags & KD_CONFIG_OFFLINE))
        return unresolved(c, path, b, ref, reflen);
    if (fd < 0)
        return kd_cfg_fail(c, path, "cannot read ${file:%s}: %s", fname, strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return kd_cfg_fail(c, path, "cannot read ${file:%s}: not a regular file", fname);
    }
    if (!(data = malloc(KD_CONFIG_MAX_VALUE_BYTES + 1))) {
        close(fd);
        return kd_cfg_fail(c, path, "out of memory");
    }
    while (len <= KD_CONFIG_MAX_VALUE_BYTES &&
           (n = read(fd, data + len, KD_CONFIG_MAX_VALUE_BYTES + 1 - len)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ok = kd_cfg_fail(c, path, "cannot read ${file:%s}: %s", fname,
                             strerror(errno));
            goto done;
        }
        len += (size_t)n;
    }
    if (len > KD_CONFIG_MAX_VALUE_BYTES) {
        ok = kd_cfg_fail(c, path, "${file:%s} is larger than %d bytes", fname,
                         KD_CONFIG_MAX_VALUE_BYTES);
        goto done;
    }
    if (memchr(data, '\0', len)) {
        ok = kd_cfg_fail(c, path, "${file:%s} holds a NUL byte", fname);
        goto done;
    }
    if (len && data[len - 1] == '\n')
        len -= len > 1 && data[len - 2] == '\r' ? 2 : 1;
    ok = add_outside(c, path, b, ref, reflen, data, len);
done:
    /* The content is a secret: leave no copy in freed memory. */
    for (size_t i = 0; i < len; i++)
        ((volatile char *)data)[i] = 0;
    free(data);
    close(fd);
    return ok;
}

/* ${NAME} or ${NAME:-default}, ref spanning the whole ${...}. */
static bool expand_var(ctx *c, const char *path, strbuf *b, const char *ref,
                       size_t reflen) {
    size_t namelen = strcspn(ref + 2, ":}");
    const char *val, *def = NULL;
    char name[128], shown_as[sizeof(name) + 3];

    if (namelen == 0 || namelen >= sizeof(name) ||
        (ref[2 + namelen] == ':' && ref[3 + namelen] != '-'))
        return kd_cfg_fail(
            c, path,
            "expected ${NAME}, ${NAME:-default} or ${file:PATH} in a string "
            "value");
    memcpy(name, ref + 2, namelen);
    name[namelen] = '\0';
    for (size_t i = 0; i < namelen; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '_')
            return kd_cfg_fail(
                c, path, "expected an environment variable name in ${...}, got \"%s\"",
                name);
    if (ref[2 + namelen] == ':')
        def = ref + 4 + namelen;
    val = getenv(name);
    if (val && *val) { /* shown as ${NAME}, with or without a default */
        snprintf(shown_as, sizeof(shown_as), "${%s}", name);
        return add_outside(c, path, b, shown_as, strlen(shown_as), val, strlen(val));
    }
    if (def) /* unset or empty: the default, as in the shell */
        return strbuf_add(c, path, b, def, (size_t)(ref + reflen - 1 - def));
    if (val)
        return true; /* set and empty */
    if (c->flags & KD_CONFIG_OFFLINE)
        return unresolved(c, path, b, ref, reflen);
    return kd_cfg_fail(c, path,
                       "environment variable %s is not set (and no ${%s:-default})", name,
                       name);
}

/* The string value in with every ${...} expanded, malloc()ed; NULL with the
 * error set. A value that took anything from the environment or a file is
 * remembered under path, with its text as written. */
static char *interpolate(ctx *c, const char *path, const char *in) {
    size_t before = c->env->expanded;
    strbuf b = {NULL, 0, 0};
    const char *p = in, *close;

    if (!strbuf_add(c, path, &b, "", 0))
        return NULL;
    while (*p) {
        size_t lit = 0;
        bool ok;

        while (p[lit] && !(p[lit] == '$' && p[lit + 1] == '{') &&
               !(p[lit] == '$' && p[lit + 1] == '$' && p[lit + 2] == '{'))
            lit++;
        if (!strbuf_add(c, path, &b, p, lit))
            goto fail;
        p += lit;
        if (!*p)
            break;
        if (p[1] == '$') { /* $${: a literal ${ */
            if (!strbuf_add(c, path, &b, "${", 2))
                goto fail;
            p += 3;
            continue;
        }
        if (!(close = strchr(p + 2, '}'))) {
            kd_cfg_fail(c, path, "unterminated ${ in a string value");
            goto fail;
        }
        if (!strncmp(p + 2, "file:", 5))
            ok = expand_file(c, path, &b, p, (size_t)(close + 1 - p));
        else
            ok = expand_var(c, path, &b, p, (size_t)(close + 1 - p));
        if (!ok)
            goto fail;
        p = close + 1;
    }
    if (c->env->expanded != before && !env_add_origin(c->env, path, in)) {
        kd_cfg_fail(c, path, "out of memory");
        goto fail;
    }
    return b.s;
fail:
    free(b.s);
    return NULL;
}

/* The text of a string value, interpolated, or the text of a number or bool
 * (so "linger.ms": 5 and "sync": "${SYNC:-true}" both work). NULL with the
 * error set when v is neither; kind names what was expected. */
char *kd_cfg_scalar_text(ctx *c, const char *path, const cJSON *v, const char *kind) {
    char buf[64];

    if (cJSON_IsString(v))
        return interpolate(c, path, v->valuestring);
    if (cJSON_IsBool(v))
        return strdup(cJSON_IsTrue(v) ? "true" : "false");
    if (cJSON_IsNumber(v)) {
        /* In range before converting: a double beyond long long (1e300) is
         * undefined behaviour to convert. 2^63 is exact as a double. */
        if (!(v->valuedouble >= -9223372036854775808.0 &&
              v->valuedouble < 9223372036854775808.0) ||
            v->valuedouble != (double)(long long)v->valuedouble) {
            kd_cfg_fail_value(c, path, v, kind);
            return NULL;
        }
        snprintf(buf, sizeof(buf), "%lld", (long long)v->valuedouble);
        return strdup(buf);
    }
    kd_cfg_fail_value(c, path, v, kind);
    return NULL;
}

static int longer_first(const void *a, const void *b) {
    size_t la = strlen(((const secret *)a)->value),
           lb = strlen(((const secret *)b)->value);

    return la < lb ? 1 : la > lb ? -1 : 0;
}

/* Longest first: a value that contains another is masked whole. */
void kd_cfg_sort_secrets(kd_config_env *env) {
    if (env && env->nsecrets > 1)
        qsort(env->secrets, env->nsecrets, sizeof(*env->secrets), longer_first);
}

const char *kd_config_template(const kd_config *cfg, const char *path) {
    return cfg ? kd_cfg_env_template(cfg->env, path) : NULL;
}

/* The longest of env's secrets that text starts with, or NULL; *vlen is
 * how many bytes of text it covers. A value cut short at end (a truncated
 * message) counts too, from KD_CONFIG_REDACT_MIN bytes on. */
static const secret *secret_at(const kd_config_env *env, const char *text,
                               const char *end, size_t *vlen) {
    /* Longest first (kd_cfg_sort_secrets): the first hit is the longest. */
    for (size_t i = 0; env && i < env->nsecrets; i++) {
        size_t n = strlen(env->secrets[i].value);

        if (n > (size_t)(end - text))
            n = (size_t)(end - text);
        if (n >= KD_CONFIG_REDACT_MIN && !strncmp(text, env->secrets[i].value, n)) {
            *vlen = n;
            return &env->secrets[i];
        }
    }
    return NULL;
}

const char *kd_config_unresolved(const kd_config *cfg, const char *prefix) {
    for (size_t i = 0; cfg && i < cfg->env->nunresolved; i++)
        if (!strncmp(cfg->env->unresolved[i], prefix, strlen(prefix)))
            return cfg->env->unresolved[i];
    return NULL;
}

char *kd_config_redact(const kd_config *cfg, const char *text, char *out,
                       size_t out_size) {
    return kd_config_redact_any(&cfg, cfg ? 1 : 0, text, out, out_size);
}

char *kd_config_redact_any(const kd_config *const *cfgs, size_t ncfgs, const char *text,
                           char *out, size_t out_size) {
    const char *end = text + strlen(text);
    size_t len = 0;

    if (!out_size)
        return out;
    while (*text && len + 1 < out_size) {
        const secret *hit = NULL, *at;
        const char *add = text;
        size_t n = 1, vlen = 0, alen;

        /* Across configs too, the longest value wins: one that contains
         * another is masked whole. */
        for (size_t c = 0; c < ncfgs; c++)
            if ((at = secret_at(cfgs[c]->env, text, end, &alen)) && alen > vlen) {
                hit = at;
                vlen = alen;
            }
        if (hit) {
            add = hit->ref;
            n = strlen(hit->ref);
            text += vlen;
        } else {
            text++;
        }
        if (n > out_size - 1 - len)
            n = out_size - 1 - len;
        memcpy(out + len, add, n);
        len += n;
    }
    out[len] = '\0';
    return out;
}
