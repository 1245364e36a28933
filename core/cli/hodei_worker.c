/*
 * hodei-worker — the worker agent.
 *
 * Registers with the scheduler (its worker token), then uses the session token the
 * registration returned for everything else; when the scheduler forgets the session (401) or
 * the worker (404) — it restarted, or removed the worker — it registers again, listing the
 * jobs it runs, and stops only those the scheduler does not give back to it.  While the
 * scheduler is away, jobs keep running and their outcomes wait: each report is retried with
 * backoff until the scheduler acknowledges it (or says the job is settled).  It heartbeats
 * the machine's CPU and memory use on its own thread, long-polls its assignments from the
 * main thread and runs each assigned job on a thread of its own: `/bin/sh -c COMMAND` in a
 * new process group with a clean environment (optionally as another user), under the job's
 * timeout; when the job ends, whatever is left
 * of its process group is killed, and the outcome is reported with the tail of what the job
 * wrote (stdout and stderr, HODEI_OUTPUT_TAIL bytes).  A job's output never reaches the
 * agent's own log.  A running job the scheduler no longer lists for this worker (cancelled,
 * or handed to another worker while this one was presumed lost) is stopped.  SIGTERM/SIGINT
 * stop the polling; running jobs get a short grace, then are killed.
 */
#include "client.h"
#include "limits.h"
#include "procstat.h"
#include "hodei_clock.h"
#include "hodei_schema.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_POLL_WAIT_S    10
#define DEFAULT_HEARTBEAT_MS   1000
#define REQUEST_TIMEOUT_MS     10000L
#define RETRY_PAUSE_MS         1000
#define REPORT_BACKOFF_MIN_MS  250     /* a report the scheduler did not answer: again after */
#define REPORT_BACKOFF_MAX_MS  5000    /* ... doubling up to this */
#define REPORT_STOPPING_MS     10000   /* after a stop signal, reports are tried this long */
#define KILL_GRACE_MS          2000    /* SIGTERM → SIGKILL */
#define SHUTDOWN_GRACE_MS      5000    /* stop signal → running jobs are killed */
#define DRAIN_AFTER_EXIT_MS    200     /* output still in flight after the group was killed */
#define JOB_PATH               "/usr/local/bin:/usr/bin:/bin"

/* Who jobs run as: the agent's own user, or --run-as USER. */
struct job_user {
    const char *name;          /* NULL: the agent's own user */
    uid_t  uid;
    gid_t  gid;
    char   user[64];           /* USER and LOGNAME */
    char   home[256];          /* HOME; with --run-as also the working directory */
    int    ngroups;
    gid_t  groups[64];
};

struct agent {
    const char *api_url;
    char        id[HODEI_ID_MAX + 1];    /* "" until the daemon names us */
    long        cpu_m, memory_mb;
    long        poll_wait_s, heartbeat_ms;
    int         stop_fd;                 /* eventfd: readable once a stop signal arrived */
    struct job_user run_as;
    char        token[HODEI_TOKEN_TEXT_MAX + 1];   /* the worker token: registrations only */

    pthread_mutex_t register_lock;       /* one registration at a time; guards the fields below */
    int             registered;
    char            session[HODEI_TOKEN_TEXT_MAX + 1];   /* the current session token */
    uint64_t        session_gen;         /* bumped by every registration */
    pthread_mutex_t lock;                /* guards the fields below */
    pthread_cond_t  changed;             /* CLOCK_MONOTONIC */
    int             running_jobs;        /* threads started for jobs, not yet done */
    struct job_run *started;             /* jobs the scheduler knows as started by us */
    int             heartbeat_stop;
    int             unreachable;         /* heartbeat thread: the last one got no answer */
};

/* One assigned job, owned by the thread that runs it. */
struct job_run {
    struct agent   *agent;
    char           *id;
    char           *command;
    char           *tenant;
    long            timeout_s;
    int64_t         started_ms;   /* when the scheduler accepted our start */
    int             cancel_fd;    /* eventfd: readable once the scheduler dropped the job */
    int             cancelled;    /* guarded by agent->lock */
    struct job_run *next;         /* in agent->started */
};

enum job_end { JOB_EXITED, JOB_TIMED_OUT, JOB_STOPPED, JOB_CANCELLED, JOB_SPAWN_FAILED };

/* The last HODEI_OUTPUT_TAIL bytes a job wrote, in a ring. */
struct output_tail {
    unsigned char buf[HODEI_OUTPUT_TAIL];
    size_t   start, len;
    uint64_t total;
};

/* The error_type each way of ending reports (JOB_EXITED: when the exit code is not 0). */
static const enum hodei_error_type error_of[] = {
    [JOB_EXITED] = HODEI_ERR_EXIT_CODE, [JOB_TIMED_OUT] = HODEI_ERR_TIMEOUT,
    [JOB_STOPPED] = HODEI_ERR_WORKER_LOST, [JOB_CANCELLED] = HODEI_ERR_CANCELLED,
    [JOB_SPAWN_FAILED] = HODEI_ERR_SPAWN_ERROR,
};

struct job_outcome {
    enum job_end end;
    int          exit_code;   /* JOB_EXITED: the exit status, 128+N when killed by signal N */
    struct output_tail out;
};

static volatile sig_atomic_t stop_requested;
static int stop_fd_for_signal = -1;

/* --- small utilities ------------------------------------------------------------------------ */

static void log_msg(const char *level, const char *fmt, ...)
{
    char msg[1024], stamp[32];
    struct timespec now;
    struct tm tm;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* one fprintf per line so concurrent threads do not interleave within a line */
    fprintf(stderr, "%s.%03ldZ hodei-worker[%d] %s: %s\n", stamp, now.tv_nsec / 1000000,
            (int)getpid(), level, msg);
}

/* Sleeps up to ms, returning early when a stop signal arrives (stop_fd -1: a plain sleep). */
static void pause_unless_stopped(int stop_fd, int ms)
{
    struct pollfd p = { .fd = stop_fd, .events = POLLIN };
    while (poll(&p, 1, ms) < 0 && errno == EINTR)
        ;
}

static void on_stop_signal(int sig)
{
    uint64_t one = 1;
    stop_requested = 1;
    if (write(stop_fd_for_signal, &one, sizeof one) < 0) {
        /* the flag alone still stops the agent */
    }
}

static void install_signal_handlers(void)
{
    struct sigaction sa = { .sa_handler = on_stop_signal };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Threads are started with the stop signals blocked so the main thread alone receives them. */
static int start_thread(pthread_t *t, void *(*fn)(void *), void *arg, int detached)
{
    sigset_t stop_signals, old;
    pthread_attr_t attr;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_attr_init(&attr);
    if (detached)
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_sigmask(SIG_BLOCK, &stop_signals, &old);
    int rc = pthread_create(t, &attr, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return rc == 0 ? 0 : -1;
}

/* --- registration and heartbeats ----------------------------------------------------------- */

static int json_array_has_string(json_t *array, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(array, i, v)
        if (json_is_string(v) && strcmp(json_string_value(v), s) == 0)
            return 1;
    return 0;
}

/*
 * Stops the jobs this worker runs but the scheduler no longer lists for it (listed: a JSON array
 * of job ids, NULL for none).  Only jobs whose start was accepted before the request that
 * brought the list was sent (sent_ms) are judged: the list may predate later ones.
 */
static void drop_unlisted_jobs(struct agent *a, json_t *listed, int64_t sent_ms)
{
    pthread_mutex_lock(&a->lock);
    for (struct job_run *run = a->started; run; run = run->next) {
        if (run->cancelled || run->started_ms >= sent_ms || json_array_has_string(listed, run->id))
            continue;
        uint64_t one = 1;
        run->cancelled = 1;
        if (write(run->cancel_fd, &one, sizeof one) < 0)
            log_msg("warn", "job %s: cannot signal its cancellation", run->id);
    }
    pthread_mutex_unlock(&a->lock);
}

/* Puts the current session token on api; returns the session's generation, for
 * agent_reregister(). */
static uint64_t agent_session(struct agent *a, struct hodei_api *api)
{
    pthread_mutex_lock(&a->register_lock);
    snprintf(api->token, sizeof api->token, "%s", a->session);
    uint64_t gen = a->session_gen;
    pthread_mutex_unlock(&a->register_lock);
    return gen;
}

/* The ids of the jobs the scheduler accepted our start of and we have not ended yet. */
static json_t *running_ids(struct agent *a)
{
    json_t *ids = json_array();
    pthread_mutex_lock(&a->lock);
    for (struct job_run *run = a->started; run; run = run->next)
        if (!run->cancelled)
            json_array_append_new(ids, json_string(run->id));
    pthread_mutex_unlock(&a->lock);
    return ids;
}

/*
 * POST /workers with the worker token.  The first registration may let the daemon pick the id;
 * later ones (after the daemon restarted, removed us or forgot our session) reuse it and list
 * the jobs we run: the answer's jobs are the ones the daemon gives back to us, and the others
 * are stopped (a removal settled them already; after a restart they may have gone elsewhere).
 * The id is only written by the first one, before any other thread reads it.  Caller holds
 * register_lock.  Returns 0 when registered; otherwise -1 with *status the HTTP status (0: no
 * answer).
 */
static int register_locked(struct agent *a, struct hodei_api *api, long *status)
{
    struct hodei_reply reply;
    json_t *body = json_pack("{s:I, s:I, s:o}", "cpu_m", (json_int_t)a->cpu_m,
                             "memory_mb", (json_int_t)a->memory_mb, "running", running_ids(a));
    if (a->id[0])
        json_object_set_new(body, "worker_id", json_string(a->id));
    int again = a->registered;
    int64_t sent_ms = hodei_mono_ms();
    snprintf(api->token, sizeof api->token, "%s", a->token);
    int rc = hodei_api_call(api, "POST", "/workers", body, REQUEST_TIMEOUT_MS, &reply);
    const char *id = json_string_value(json_object_get(reply.body, "id"));
    const char *session = json_string_value(json_object_get(reply.body, "session_token"));
    if (rc == 0 && !again && id && hodei_id_valid(id, strlen(id)))
        snprintf(a->id, sizeof a->id, "%s", id);
    if (rc == 0 && (!id || strcmp(id, a->id) != 0)) {
        log_msg("error", "registration reply names another worker id");
        rc = -1;
    } else if (rc == 0 && a->token[0] && (!session || strlen(session) > HODEI_TOKEN_TEXT_MAX)) {
        log_msg("error", "registration reply carries no session token");
        rc = -1;
    } else if (rc == 0) {
        json_t *mine = json_object_get(reply.body, "jobs");
        snprintf(a->session, sizeof a->session, "%s", session ? session : "");
        a->session_gen++;
        log_msg("info", "%s as %s (cpu_m=%ld memory_mb=%ld, %zu running job(s) kept)",
                again ? "re-registered" : "registered", a->id, a->cpu_m, a->memory_mb,
                json_array_size(mine));
        drop_unlisted_jobs(a, json_is_array(mine) ? mine : NULL, sent_ms);
    } else {
        log_msg("error", "registration failed: %s", reply.error);
    }
    a->registered |= rc == 0;
    *status = reply.status;
    hodei_reply_clear(&reply);
    json_decref(body);
    return rc;
}

static int agent_register(struct agent *a, struct hodei_api *api, long *status)
{
    pthread_mutex_lock(&a->register_lock);
    int rc = register_locked(a, api, status);
    pthread_mutex_unlock(&a->register_lock);
    return rc;
}

/*
 * The scheduler refused session gen (401) or no longer knows this worker (404): registers
 * again, unless another thread already did since gen.  While the old registration still
 * stands (409: the daemon has not removed it yet) the next refusal tries again.
 */
static int agent_reregister(struct agent *a, struct hodei_api *api, uint64_t gen)
{
    long status;
    int rc = 0;
    pthread_mutex_lock(&a->register_lock);
    if (a->session_gen == gen) {
        log_msg("warn", "the scheduler no longer knows worker %s or its session", a->id);
        rc = register_locked(a, api, &status);
    }
    pthread_mutex_unlock(&a->register_lock);
    return rc;
}

/* 401 (a forgotten session) or 404 (a forgotten worker). */
static int forgotten(long status)
{
    return status == 401 || status == 404;
}

/* The first registration waits for the scheduler to come up; a refusal ends the agent. */
static int agent_register_first(struct agent *a, struct hodei_api *api)
{
    long status;
    while (agent_register(a, api, &status) < 0) {
        if (status != 0 || stop_requested)
            return -1;
        pause_unless_stopped(a->stop_fd, RETRY_PAUSE_MS);
    }
    return 0;
}

/* The machine's use since the previous sample, as the heartbeat body. */
static json_t *usage_sample(struct cpu_times *prev)
{
    struct cpu_times cur;
    struct meminfo mem;
    double cpu = 0.0, mem_mb = 0.0;
    if (cpu_times_read(&cur) == 0) {
        cpu = cpu_percent_between(prev, &cur);
        *prev = cur;
    }
    if (meminfo_read(&mem) == 0)
        mem_mb = meminfo_used_mb(&mem);
    return json_pack("{s:f, s:f}", "cpu_usage_percent", cpu, "memory_usage_mb", mem_mb);
}

/* Returns 0 when the daemon took the heartbeat (re-registering first if it had removed us). */
static int send_heartbeat(struct agent *a, struct hodei_api *api, struct cpu_times *prev)
{
    struct hodei_reply reply;
    json_t *body = usage_sample(prev);
    char *path = hodei_api_path_id("/workers", a->id, "/heartbeat");
    int64_t sent_ms = hodei_mono_ms();
    uint64_t gen = agent_session(a, api);
    int rc = path ? hodei_api_call(api, "POST", path, body, REQUEST_TIMEOUT_MS, &reply) : -1;
    if (rc == 0) {
        json_t *listed = json_object_get(reply.body, "jobs");
        if (json_is_array(listed))
            drop_unlisted_jobs(a, listed, sent_ms);
    } else if (path && forgotten(reply.status)) {
        agent_reregister(a, api, gen);
    } else if (path && !a->unreachable) {   /* once, until a heartbeat gets through again */
        log_msg("warn", "heartbeat failed: %s; running jobs go on, reports wait", reply.error);
    }
    if (path && (rc == 0) == a->unreachable) {
        a->unreachable = rc != 0 && !forgotten(reply.status);
        if (!a->unreachable)
            log_msg("info", "the scheduler answers heartbeats again");
    }
    if (path)
        hodei_reply_clear(&reply);
    free(path);
    json_decref(body);
    return rc;
}

/* The next heartbeat time: one interval after the last, or from now when that one ran late. */
static void heartbeat_next(struct timespec *next, long interval_ms)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    hodei_timespec_add_ms(next, interval_ms);
    if (hodei_timespec_after(&now, next)) {
        *next = now;
        hodei_timespec_add_ms(next, interval_ms);
    }
}

static void *heartbeat_main(void *arg)
{
    struct agent *a = arg;
    struct hodei_api api;
    struct cpu_times prev = {0};
    struct timespec next;

    if (hodei_api_open(&api, a->api_url) < 0) {
        log_msg("error", "heartbeat: cannot set up the HTTP client");
        return NULL;
    }
    cpu_times_read(&prev);
    clock_gettime(CLOCK_MONOTONIC, &next);
    pthread_mutex_lock(&a->lock);
    for (;;) {
        heartbeat_next(&next, a->heartbeat_ms);
        while (!a->heartbeat_stop
               && pthread_cond_timedwait(&a->changed, &a->lock, &next) != ETIMEDOUT)
            ;
        if (a->heartbeat_stop)
            break;
        pthread_mutex_unlock(&a->lock);
        send_heartbeat(a, &api, &prev);
        pthread_mutex_lock(&a->lock);
    }
    pthread_mutex_unlock(&a->lock);
    hodei_api_close(&api);
    return NULL;
}

/* --- running one job ------------------------------------------------------------------------- */

static void tail_add(struct output_tail *t, const unsigned char *p, size_t n)
{
    t->total += n;
    for (size_t done = 0; done < n;) {
        size_t at = (t->start + t->len) % sizeof t->buf;
        size_t room = sizeof t->buf - at;
        size_t chunk = n - done < room ? n - done : room;
        memcpy(t->buf + at, p + done, chunk);
        done += chunk;
        t->len += chunk;
        if (t->len > sizeof t->buf) {  /* overwrote the oldest bytes */
            t->start = (t->start + t->len - sizeof t->buf) % sizeof t->buf;
            t->len = sizeof t->buf;
        }
    }
}

/* Reads what the job's pipe holds now (non-blocking); 1 at end of file. */
static int tail_read(struct output_tail *t, int fd)
{
    unsigned char chunk[8192];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n > 0) {
            tail_add(t, chunk, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return n == 0;
    }
}

/* The tail as base64 (freshly allocated). */
static char *tail_base64(const struct output_tail *t)
{
    unsigned char *flat = malloc(t->len + 1);
    char *b64 = malloc(4 * ((t->len + 2) / 3) + 1);
    if (flat && b64) {
        size_t first = sizeof t->buf - t->start < t->len ? sizeof t->buf - t->start : t->len;
        memcpy(flat, t->buf + t->start, first);
        memcpy(flat + first, t->buf, t->len - first);
        EVP_EncodeBlock((unsigned char *)b64, flat, (int)t->len);
    } else {
        free(b64);
        b64 = NULL;
    }
    free(flat);
    return b64;
}

/* The environment of a job: exactly these variables (README "What a job sees"). */
struct job_env {
    char  vars[9][384];
    char *envp[10];
};

static void job_env_build(struct job_env *e, const struct agent *a, const struct job_run *run)
{
    const struct job_user *u = &a->run_as;
    snprintf(e->vars[0], sizeof e->vars[0], "PATH=%s", JOB_PATH);
    snprintf(e->vars[1], sizeof e->vars[1], "HOME=%s", u->home);
    snprintf(e->vars[2], sizeof e->vars[2], "USER=%s", u->user);
    snprintf(e->vars[3], sizeof e->vars[3], "LOGNAME=%s", u->user);
    snprintf(e->vars[4], sizeof e->vars[4], "SHELL=/bin/sh");
    snprintf(e->vars[5], sizeof e->vars[5], "LANG=C.UTF-8");
    snprintf(e->vars[6], sizeof e->vars[6], "HODEI_JOB_ID=%s", run->id);
    snprintf(e->vars[7], sizeof e->vars[7], "HODEI_TENANT_ID=%s", run->tenant);
    snprintf(e->vars[8], sizeof e->vars[8], "HODEI_WORKER_ID=%s", a->id);
    for (int i = 0; i < 9; i++)
        e->envp[i] = e->vars[i];
    e->envp[9] = NULL;
}

/* In the child between fork and exec: async-signal-safe calls only.  Reports errno on err_fd
 * (close-on-exec: an exec that works closes it unwritten) and exits. */
static void job_child(const struct agent *a, const struct job_run *run, char **envp, int null_fd,
                      int out_fd, int err_fd)
{
    const struct job_user *u = &a->run_as;
    char *argv[] = { "sh", "-c", run->command, NULL };
    sigset_t none;
    sigemptyset(&none);
    setpgid(0, 0);
    signal(SIGPIPE, SIG_DFL);          /* the agent ignores it; the job must not inherit that */
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (dup2(null_fd, STDIN_FILENO) < 0 || dup2(out_fd, STDOUT_FILENO) < 0
        || dup2(out_fd, STDERR_FILENO) < 0 || dup2(err_fd, 3) < 0
        || fcntl(3, F_SETFD, FD_CLOEXEC) < 0)
        goto failed;
    close_range(4, ~0U, 0);            /* nothing of the agent's: its sockets, its files */
    if (u->name && (setgroups((size_t)u->ngroups, u->groups) < 0 || setgid(u->gid) < 0
                    || setuid(u->uid) < 0 || (chdir(u->home) < 0 && chdir("/") < 0)))
        goto failed;
    execve("/bin/sh", argv, envp);
failed:;
    int e = errno;
    if (write(3, &e, sizeof e) < 0) {
        /* the parent sees end of file and reports a spawn error all the same */
    }
    _exit(127);
}

/*
 * Starts `/bin/sh -c command` as the leader of a new process group, its stdout and stderr on
 * out_fd; 0 or an errno value.
 */
static int job_spawn(const struct agent *a, const struct job_run *run, int out_fd, pid_t *pid)
{
    struct job_env env;
    int err_pipe[2], null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    job_env_build(&env, a, run);
    if (null_fd < 0)
        return errno;
    if (pipe2(err_pipe, O_CLOEXEC) < 0) {
        int e = errno;
        close(null_fd);
        return e;
    }
    *pid = fork();
    if (*pid == 0)
        job_child(a, run, env.envp, null_fd, out_fd, err_pipe[1]);
    int e = *pid < 0 ? errno : 0;
    close(err_pipe[1]);
    close(null_fd);
    if (*pid > 0) {
        setpgid(*pid, *pid);           /* as the child does: whichever runs first */
        int child_errno;
        ssize_t n;
        while ((n = read(err_pipe[0], &child_errno, sizeof child_errno)) < 0 && errno == EINTR)
            ;
        if (n > 0) {                   /* the child could not become the job */
            waitpid(*pid, NULL, 0);
            e = n == (ssize_t)sizeof child_errno ? child_errno : EIO;
        }
    }
    close(err_pipe[0]);
    return e;
}

/* Waits up to ms for the process behind pidfd to exit; 1 when it did. */
static int wait_exit(int pidfd, int ms)
{
    struct pollfd p = { .fd = pidfd, .events = POLLIN };
    int n;
    while ((n = poll(&p, 1, ms)) < 0 && errno == EINTR)
        ;
    return n > 0;
}

/* SIGTERM to the whole group, SIGKILL to whatever is left after the grace. */
static void terminate_group(pid_t pgid, int pidfd)
{
    kill(-pgid, SIGTERM);
    wait_exit(pidfd, KILL_GRACE_MS);
    kill(-pgid, SIGKILL);   /* the leader is not reaped yet, so the group id is still ours */
}

/*
 * Waits for the job's process, enforcing its timeout, the shutdown grace and the scheduler's
 * cancellation, and collects the tail of its output from out_fd.  When the leader has exited,
 * whatever is left of its process group (background children) is killed; the leader is
 * reaped before returning.
 */
static void job_wait(const struct job_run *run, pid_t pid, int pidfd, int out_fd,
                     struct job_outcome *out)
{
    int64_t timeout_at = run->timeout_s > 0 ? hodei_mono_ms() + run->timeout_s * 1000 : INT64_MAX;
    int64_t stop_at = INT64_MAX;
    int out_open = 1;

    out->end = JOB_EXITED;
    for (;;) {
        struct pollfd fds[4] = { { .fd = pidfd, .events = POLLIN },
                                 { .fd = run->cancel_fd, .events = POLLIN },
                                 { .fd = out_open ? out_fd : -1, .events = POLLIN },
                                 { .fd = run->agent->stop_fd, .events = POLLIN } };
        int64_t deadline = timeout_at < stop_at ? timeout_at : stop_at;
        int wait_ms = -1;
        if (deadline != INT64_MAX) {
            int64_t left = deadline - hodei_mono_ms();
            wait_ms = left > 0 ? (int)left : 0;
        }
        int n = poll(fds, stop_at == INT64_MAX ? 4 : 3, wait_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0 && fds[2].revents && tail_read(&out->out, out_fd))
            out_open = 0;
        if (n > 0 && fds[0].revents)
            break;
        if (n > 0 && fds[1].revents) {
            out->end = JOB_CANCELLED;
            log_msg("info", "job %s: the scheduler dropped it, terminating it", run->id);
            terminate_group(pid, pidfd);
            break;
        }
        if (n > 0 && fds[3].revents) {
            stop_at = hodei_mono_ms() + SHUTDOWN_GRACE_MS;
            continue;
        }
        if (n == 0 && hodei_mono_ms() >= deadline) {
            out->end = deadline == timeout_at ? JOB_TIMED_OUT : JOB_STOPPED;
            log_msg("info", "job %s: %s, terminating it", run->id,
                    out->end == JOB_TIMED_OUT ? "timeout reached" : "shutdown grace over");
            terminate_group(pid, pidfd);
            break;
        }
    }
    kill(-pid, SIGKILL);   /* what the job left behind; the unreaped leader keeps the group id */
    /* what it wrote before the end, briefly: a process that left the group keeps the pipe */
    for (int64_t until = hodei_mono_ms() + DRAIN_AFTER_EXIT_MS; out_open;) {
        int64_t left = until - hodei_mono_ms();
        struct pollfd p = { .fd = out_fd, .events = POLLIN };
        if (left <= 0 || poll(&p, 1, (int)left) <= 0 || tail_read(&out->out, out_fd))
            break;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    out->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void job_execute(const struct job_run *run, struct job_outcome *out)
{
    int pipe_fds[2];
    pid_t pid;
    memset(out, 0, sizeof *out);
    if (pipe2(pipe_fds, O_CLOEXEC) < 0) {
        log_msg("error", "job %s: pipe: %s", run->id, strerror(errno));
        out->end = JOB_SPAWN_FAILED;
        return;
    }
    int err = job_spawn(run->agent, run, pipe_fds[1], &pid);
    close(pipe_fds[1]);
    fcntl(pipe_fds[0], F_SETFL, O_NONBLOCK);
    if (err) {
        log_msg("error", "job %s: cannot start /bin/sh%s%s: %s", run->id,
                run->agent->run_as.name ? " as " : "",
                run->agent->run_as.name ? run->agent->run_as.name : "", strerror(err));
        close(pipe_fds[0]);
        out->end = JOB_SPAWN_FAILED;
        return;
    }
    int pidfd = pidfd_open(pid, 0);
    if (pidfd < 0) {
        log_msg("error", "job %s: pidfd_open: %s", run->id, strerror(errno));
        kill(-pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(pipe_fds[0]);
        out->end = JOB_SPAWN_FAILED;
        return;
    }
    log_msg("info", "job %s: running (pid %d, timeout %lds)", run->id, (int)pid, run->timeout_s);
    job_wait(run, pid, pidfd, pipe_fds[0], out);
    close(pidfd);
    close(pipe_fds[0]);
}

/* The request that reports an outcome: succeed, or fail with its error_type; with the tail of
 * the output when the job ran. */
static json_t *outcome_body(const struct job_outcome *out, const char **verb)
{
    json_t *body = json_object();
    if (out->end != JOB_SPAWN_FAILED) {
        char *b64 = tail_base64(&out->out);
        if (b64) {
            json_object_set_new(body, "output", json_string(b64));
            json_object_set_new(body, "output_bytes", json_integer((json_int_t)out->out.total));
        }
        free(b64);
    }
    if (out->end == JOB_EXITED && out->exit_code == 0) {
        *verb = "/succeed";
        json_object_set_new(body, "exit_code", json_integer(0));
        return body;
    }
    *verb = "/fail";
    json_object_set_new(body, "error_type",
                        json_string(hodei_error_type_names[error_of[out->end]]));
    if (out->end == JOB_EXITED)
        json_object_set_new(body, "exit_code", json_integer(out->exit_code));
    return body;
}

/* Reports the outcome until the scheduler acknowledges it or says the job is settled: while it
 * cannot be reached, restarts or cannot commit (5xx), again after a backoff; after our
 * session was forgotten, again once registered (the job is listed, so it is ours again). */
static void job_report(struct hodei_api *api, const struct job_run *run,
                       const struct job_outcome *out)
{
    const char *verb;
    json_t *body = outcome_body(out, &verb);
    char *path = hodei_api_path_id("/jobs", run->id, verb);
    struct hodei_reply reply = {0};
    char result[64];
    if (out->end == JOB_EXITED)
        snprintf(result, sizeof result, "exit code %d", out->exit_code);
    else
        snprintf(result, sizeof result, "%s", hodei_error_type_names[error_of[out->end]]);

    long backoff_ms = REPORT_BACKOFF_MIN_MS, last_status = -1;
    int64_t give_up_at = INT64_MAX;
    for (int attempt = 1; path; attempt++) {
        uint64_t gen = agent_session(run->agent, api);
        int rc = hodei_api_call(api, "POST", path, body, REQUEST_TIMEOUT_MS, &reply);
        long status = reply.status;
        if (rc == 0)
            log_msg("info", "job %s: reported %s (%s, %llu bytes of output)%s", run->id, verb + 1,
                    result, (unsigned long long)out->out.total,
                    attempt > 1 ? " after retrying" : "");
        else if (status == 409 || status == 404)   /* e.g. timed out or cancelled */
            log_msg("info", "job %s: already settled by the scheduler (%s)", run->id, reply.error);
        else if (status != last_status)
            log_msg("warn", "job %s: reporting %s failed: %s; %s", run->id, verb + 1, reply.error,
                    status == 0 || status >= 500 || status == 401 ? "trying again" : "giving up");
        hodei_reply_clear(&reply);
        if (rc == 0 || status == 409 || status == 404)
            break;
        if (status == 401) {                       /* the session is forgotten: register again */
            if (agent_reregister(run->agent, api, gen) == 0 && last_status != 401) {
                last_status = status;
                continue;
            }
        } else if (status != 0 && status < 500) {  /* refused for good (400, 403, 429) */
            break;
        }
        last_status = status;
        if (stop_requested && give_up_at == INT64_MAX)
            give_up_at = hodei_mono_ms() + REPORT_STOPPING_MS;
        if (hodei_mono_ms() >= give_up_at) {
            log_msg("warn", "job %s: stopping without reporting it: the scheduler decides",
                    run->id);
            break;
        }
        pause_unless_stopped(-1, (int)backoff_ms);
        backoff_ms = backoff_ms * 2 < REPORT_BACKOFF_MAX_MS ? backoff_ms * 2
                                                            : REPORT_BACKOFF_MAX_MS;
    }
    free(path);
    json_decref(body);
}

static struct job_run *job_run_new(struct agent *a, const char *id, const char *command,
                                   const char *tenant, long timeout_s)
{
    struct job_run *run = calloc(1, sizeof *run);
    if (!run)
        return NULL;
    *run = (struct job_run){ .agent = a, .id = strdup(id), .command = strdup(command),
                             .tenant = strdup(tenant), .timeout_s = timeout_s,
                             .cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) };
    if (!run->id || !run->command || !run->tenant || run->cancel_fd < 0) {
        if (run->cancel_fd >= 0)
            close(run->cancel_fd);
        free(run->id);
        free(run->command);
        free(run->tenant);
        free(run);
        return NULL;
    }
    return run;
}

static void job_run_free(struct job_run *run)
{
    close(run->cancel_fd);
    free(run->id);
    free(run->command);
    free(run->tenant);
    free(run);
}

/* The scheduler accepted our start: the job counts as running here from now on. */
static void jobs_track(struct agent *a, struct job_run *run)
{
    pthread_mutex_lock(&a->lock);
    run->started_ms = hodei_mono_ms();
    run->next = a->started;
    a->started = run;
    a->running_jobs++;
    pthread_mutex_unlock(&a->lock);
}

static void jobs_untrack(struct agent *a, struct job_run *run)
{
    pthread_mutex_lock(&a->lock);
    for (struct job_run **p = &a->started; *p; p = &(*p)->next) {
        if (*p == run) {
            *p = run->next;
            break;
        }
    }
    a->running_jobs--;
    pthread_cond_broadcast(&a->changed);
    pthread_mutex_unlock(&a->lock);
}

static void *job_main(void *arg)
{
    struct job_run *run = arg;
    struct agent *a = run->agent;
    struct hodei_api api;
    struct job_outcome *out = malloc(sizeof *out);   /* the tail is too big for a thread's stack */

    if (!out) {
        log_msg("error", "job %s: no memory to run it", run->id);
    } else {
        job_execute(run, out);
        if (out->end == JOB_CANCELLED) {
            /* the scheduler has settled this job already: there is nothing to report */
        } else if (hodei_api_open(&api, a->api_url) == 0) {
            job_report(&api, run, out);
            hodei_api_close(&api);
        } else {
            log_msg("error", "job %s: cannot set up the HTTP client to report", run->id);
        }
    }
    free(out);
    jobs_untrack(a, run);
    job_run_free(run);
    return NULL;
}

/* --- assignments ----------------------------------------------------------------------------- */

/* POST /jobs/{id}/start; 0 when the scheduler lets us run it.  Without that answer the job
 * is not run: the scheduler decides again (the assignment stays, or goes back to the queue
 * after a restart).  *again: it may answer later (no answer, 5xx), so ask after a pause. */
static int job_start(struct agent *a, struct hodei_api *api, const char *id, int *again)
{
    struct hodei_reply reply;
    json_t *body = json_object();
    char *path = hodei_api_path_id("/jobs", id, "/start");
    uint64_t gen = agent_session(a, api);
    int rc = path ? hodei_api_call(api, "POST", path, body, REQUEST_TIMEOUT_MS, &reply) : -1;
    *again = 0;
    if (rc < 0 && path) {
        log_msg(reply.status == 409 ? "info" : "warn", "job %s: not started: %s", id, reply.error);
        if (forgotten(reply.status))
            agent_reregister(a, api, gen);
        *again = reply.status == 0 || reply.status >= 500;
    }
    if (path)
        hodei_reply_clear(&reply);
    free(path);
    json_decref(body);
    return rc;
}

/* Takes one assigned job: tells the daemon it starts, then runs it on a thread of its own.
 * Returns -1 when the daemon could not say yet (pause before asking for assignments again). */
static int job_take(struct agent *a, struct hodei_api *api, json_t *job)
{
    const char *id = json_string_value(json_object_get(job, "id"));
    const char *command = json_string_value(json_object_get(job, "command"));
    const char *tenant = json_string_value(json_object_get(job, "tenant_id"));
    json_int_t timeout_s = json_integer_value(json_object_get(job, "timeout_s"));
    int again;
    if (!id || !command || !tenant) {
        log_msg("warn", "ignoring an assignment without id, command or tenant");
        return 0;
    }
    if (job_start(a, api, id, &again) < 0)
        return again ? -1 : 0;

    struct job_run *run = job_run_new(a, id, command, tenant, (long)timeout_s);
    pthread_t t;
    if (run)
        jobs_track(a, run);
    if (!run || start_thread(&t, job_main, run, 1) < 0) {
        struct job_run unrun = { .agent = a, .id = (char *)id };
        static struct job_outcome failed = { .end = JOB_SPAWN_FAILED };
        log_msg("error", "job %s: no resources to run it", id);
        job_report(api, run ? run : &unrun, &failed);
        if (run) {
            jobs_untrack(a, run);
            job_run_free(run);
        }
    }
    return 0;
}

/*
 * One long poll of GET /workers/{id}/assignments on poll_api (which a stop signal interrupts),
 * taking every job it returns through api (which it does not: a start the scheduler accepted
 * must be known here).
 */
static void poll_assignments(struct agent *a, struct hodei_api *poll_api, struct hodei_api *api)
{
    char wait[16];
    struct hodei_reply reply;
    snprintf(wait, sizeof wait, "%ld", a->poll_wait_s);
    char *base = hodei_api_path_id("/workers", a->id, "/assignments");
    char *path = base ? hodei_api_path_add_query(base, "wait", wait) : NULL;
    free(base);
    if (!path) {
        pause_unless_stopped(a->stop_fd, RETRY_PAUSE_MS);
        return;
    }
    uint64_t gen = agent_session(a, poll_api);
    int rc = hodei_api_call(poll_api, "GET", path, NULL, a->poll_wait_s * 1000 + REQUEST_TIMEOUT_MS,
                            &reply);
    free(path);
    if (rc == 0) {
        size_t i;
        json_t *job;
        int later = 0;
        json_array_foreach(json_object_get(reply.body, "jobs"), i, job)
            later |= job_take(a, api, job) < 0;
        if (later)
            pause_unless_stopped(a->stop_fd, RETRY_PAUSE_MS);
    } else if (!stop_requested) {
        log_msg("warn", "polling assignments failed: %s", reply.error);
        if (!forgotten(reply.status) || agent_reregister(a, api, gen) < 0)
            pause_unless_stopped(a->stop_fd, RETRY_PAUSE_MS);
    }
    hodei_reply_clear(&reply);
}

/* After a stop signal: job threads kill what outlives the grace; wait for them, then stop
 * beating. */
static void agent_drain(struct agent *a, pthread_t heartbeat)
{
    pthread_mutex_lock(&a->lock);
    if (a->running_jobs)
        log_msg("info", "stopping: waiting for %d running job(s)", a->running_jobs);
    while (a->running_jobs > 0)
        pthread_cond_wait(&a->changed, &a->lock);
    a->heartbeat_stop = 1;
    pthread_cond_broadcast(&a->changed);
    pthread_mutex_unlock(&a->lock);
    pthread_join(heartbeat, NULL);
}

/* --- command line ---------------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: hodei-worker --api URL [--token-file FILE] [--id ID] [--cpu-m N]\n"
            "                    [--memory-mb N] [--run-as USER] [--poll-wait S] [--heartbeat-ms N]\n"
            "  --api URL          scheduler base URL, e.g. http://127.0.0.1:8080\n"
            "  --token-file FILE  the worker token (first line of FILE); default $HODEI_TOKEN\n"
            "  --id ID            worker id ([A-Za-z0-9._:-]{1,64}); the scheduler picks one if absent\n"
            "  --cpu-m N          CPU capacity in millicores (default: online CPUs x 1000)\n"
            "  --memory-mb N      memory capacity in MB (default: MemTotal)\n"
            "  --run-as USER      run jobs as USER, in USER's home directory or / (the agent runs as root)\n"
            "  --poll-wait S      long-poll wait for assignments, 1..30 s (default %d)\n"
            "  --heartbeat-ms N   heartbeat interval (default %d)\n",
            DEFAULT_POLL_WAIT_S, DEFAULT_HEARTBEAT_MS);
}

/* Fills the capacity the command line left out from the machine itself. */
static int default_capacity(struct agent *a)
{
    if (a->cpu_m == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        a->cpu_m = (cpus > 0 ? cpus : 1) * 1000;
    }
    if (a->memory_mb == 0) {
        struct meminfo mem;
        if (meminfo_read(&mem) < 0 || mem.total_kb < 1024) {
            fprintf(stderr, "hodei-worker: cannot read MemTotal from /proc/meminfo; use --memory-mb\n");
            return -1;
        }
        a->memory_mb = (long)(mem.total_kb / 1024);
    }
    return 0;
}

/*
 * Who jobs run as.  With --run-as (root only, or the agent's own user): that user's uid, gid,
 * supplementary groups and home, resolved once here.  Without: the agent's own user.
 * 0, or -1 after printing why.
 */
static int resolve_job_user(struct job_user *u, const char *name)
{
    struct passwd pw, *found = NULL;
    char buf[4096];
    uid_t me = geteuid();
    int err = name ? getpwnam_r(name, &pw, buf, sizeof buf, &found)
                   : getpwuid_r(me, &pw, buf, sizeof buf, &found);
    u->name = name;
    if (!found && name) {
        fprintf(stderr, "hodei-worker: --run-as %s: %s\n", name,
                err ? strerror(err) : "no such user");
        return -1;
    }
    if (!found) {                      /* a user without a name (e.g. a dynamic uid) */
        snprintf(u->user, sizeof u->user, "%u", (unsigned)me);
        snprintf(u->home, sizeof u->home, "/");
        return 0;
    }
    u->uid = pw.pw_uid;
    u->gid = pw.pw_gid;
    snprintf(u->user, sizeof u->user, "%s", pw.pw_name);
    snprintf(u->home, sizeof u->home, "%s", pw.pw_dir && pw.pw_dir[0] ? pw.pw_dir : "/");
    if (!name)
        return 0;
    if (me != 0 && pw.pw_uid != me) {
        fprintf(stderr, "hodei-worker: --run-as %s needs the agent to run as root\n", name);
        return -1;
    }
    if (pw.pw_uid == 0) {
        fprintf(stderr, "hodei-worker: --run-as %s: jobs do not run as root\n", name);
        return -1;
    }
    u->ngroups = (int)(sizeof u->groups / sizeof u->groups[0]);
    if (getgrouplist(pw.pw_name, pw.pw_gid, u->groups, &u->ngroups) < 0) {
        fprintf(stderr, "hodei-worker: --run-as %s: more than %zu groups\n", name,
                sizeof u->groups / sizeof u->groups[0]);
        return -1;
    }
    return 0;
}

/* 0 when the arguments are valid (a filled in), -1 after printing why. */
static int parse_args(int argc, char **argv, struct agent *a)
{
    enum { OPT_API = 1, OPT_ID, OPT_CPU, OPT_MEM, OPT_WAIT, OPT_HEARTBEAT, OPT_TOKEN_FILE,
           OPT_RUN_AS };
    static const struct option options[] = {
        { "api", required_argument, NULL, OPT_API },
        { "id", required_argument, NULL, OPT_ID },
        { "cpu-m", required_argument, NULL, OPT_CPU },
        { "memory-mb", required_argument, NULL, OPT_MEM },
        { "poll-wait", required_argument, NULL, OPT_WAIT },
        { "heartbeat-ms", required_argument, NULL, OPT_HEARTBEAT },
        { "token-file", required_argument, NULL, OPT_TOKEN_FILE },
        { "run-as", required_argument, NULL, OPT_RUN_AS },
        { NULL, 0, NULL, 0 },
    };
    const char *token_file = NULL, *run_as = NULL;
    int opt, bad = 0;
    a->poll_wait_s = DEFAULT_POLL_WAIT_S;
    a->heartbeat_ms = DEFAULT_HEARTBEAT_MS;
    while (!bad && (opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case OPT_API: a->api_url = optarg; break;
        case OPT_ID:
            bad = !hodei_id_valid(optarg, strlen(optarg));
            if (!bad)
                snprintf(a->id, sizeof a->id, "%s", optarg);
            break;
        case OPT_CPU: bad = hodei_parse_long(optarg, 1, 1000000000, &a->cpu_m); break;
        case OPT_MEM: bad = hodei_parse_long(optarg, 1, 1000000000, &a->memory_mb); break;
        case OPT_WAIT: bad = hodei_parse_long(optarg, 1, 30, &a->poll_wait_s); break;
        case OPT_HEARTBEAT: bad = hodei_parse_long(optarg, 10, 3600000, &a->heartbeat_ms); break;
        case OPT_TOKEN_FILE: token_file = optarg; break;
        case OPT_RUN_AS: run_as = optarg; break;
        default: bad = 1; break;
        }
        if (bad && opt != '?')
            fprintf(stderr, "hodei-worker: invalid value for --%s: '%s'\n", options[opt - 1].name, optarg);
    }
    if (!bad && optind < argc) {
        fprintf(stderr, "hodei-worker: unexpected argument '%s'\n", argv[optind]);
        bad = 1;
    }
    if (!bad && !a->api_url) {
        fprintf(stderr, "hodei-worker: --api is required\n");
        bad = 1;
    }
    if (bad) {
        usage();
        return -1;
    }
    char err[512];
    if (hodei_token_load(token_file, a->token, err, sizeof err) < 0) {
        fprintf(stderr, "hodei-worker: %s\n", err);
        return -1;
    }
    return resolve_job_user(&a->run_as, run_as);
}

static int agent_init(struct agent *a)
{
    hodei_cond_init_monotonic(&a->changed);
    pthread_mutex_init(&a->lock, NULL);
    pthread_mutex_init(&a->register_lock, NULL);
    a->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return a->stop_fd < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
    static struct agent a;
    struct hodei_api api = {0}, poll_api = {0};
    pthread_t heartbeat;
    int rc = 1;

    if (parse_args(argc, argv, &a) < 0)
        return 2;
    /* jobs running as this user cannot read the agent's memory or environment (its tokens) */
    prctl(PR_SET_DUMPABLE, 0);
    if (default_capacity(&a) < 0 || agent_init(&a) < 0 || hodei_api_global_init() < 0 ||
        hodei_api_open(&api, a.api_url) < 0 || hodei_api_open(&poll_api, a.api_url) < 0) {
        fprintf(stderr, "hodei-worker: cannot initialise\n");
        goto out;
    }
    stop_fd_for_signal = a.stop_fd;
    install_signal_handlers();
    poll_api.abort_on = &stop_requested;

    if (agent_register_first(&a, &api) < 0) {
        rc = stop_requested ? 0 : 1;
        goto out;
    }
    if (start_thread(&heartbeat, heartbeat_main, &a, 0) < 0) {
        log_msg("error", "cannot start the heartbeat thread");
        goto out;
    }
    while (!stop_requested)
        poll_assignments(&a, &poll_api, &api);
    log_msg("info", "stop requested: no new jobs");
    agent_drain(&a, heartbeat);
    log_msg("info", "stopped");
    rc = 0;
out:
    hodei_api_close(&poll_api);
    hodei_api_close(&api);
    return rc;
}
