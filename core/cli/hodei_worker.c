/*
 * hodei-worker — the worker agent.
 *
 * Registers with the scheduler, heartbeats the machine's CPU and memory use on its own thread,
 * long-polls its assignments from the main thread and runs each assigned job on a thread of its
 * own: `/bin/sh -c COMMAND` in a new process group, under the job's timeout, then reports the
 * outcome.  A running job the scheduler no longer lists for this worker (cancelled, or handed to
 * another worker while this one was presumed lost) is stopped.  SIGTERM/SIGINT stop the polling;
 * running jobs get a short grace, then are killed.
 */
#include "client.h"
#include "procstat.h"
#include "hodei_schema.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_POLL_WAIT_S    10
#define DEFAULT_HEARTBEAT_MS   1000
#define REQUEST_TIMEOUT_MS     10000L
#define RETRY_PAUSE_MS         1000
#define REPORT_ATTEMPTS        5
#define KILL_GRACE_MS          2000    /* SIGTERM → SIGKILL */
#define SHUTDOWN_GRACE_MS      5000    /* stop signal → running jobs are killed */

extern char **environ;

struct agent {
    const char *api_url;
    char        id[HODEI_ID_MAX + 1];    /* "" until the daemon names us */
    long        cpu_m, memory_mb;
    long        poll_wait_s, heartbeat_ms;
    int         stop_fd;                 /* eventfd: readable once a stop signal arrived */

    pthread_mutex_t register_lock;       /* one registration at a time; guards registered */
    int             registered;
    pthread_mutex_t lock;                /* guards the fields below */
    pthread_cond_t  changed;             /* CLOCK_MONOTONIC */
    int             running_jobs;        /* threads started for jobs, not yet done */
    struct job_run *started;             /* jobs the scheduler knows as started by us */
    int             heartbeat_stop;
};

/* One assigned job, owned by the thread that runs it. */
struct job_run {
    struct agent   *agent;
    char           *id;
    char           *command;
    long            timeout_s;
    int64_t         started_ms;   /* when the scheduler accepted our start */
    int             cancel_fd;    /* eventfd: readable once the scheduler dropped the job */
    int             cancelled;    /* guarded by agent->lock */
    struct job_run *next;         /* in agent->started */
};

enum job_end { JOB_EXITED, JOB_TIMED_OUT, JOB_STOPPED, JOB_CANCELLED, JOB_SPAWN_FAILED };

struct job_outcome {
    enum job_end end;
    int          exit_code;   /* JOB_EXITED: the exit status, 128+N when killed by signal N */
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

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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

/*
 * POST /workers.  The first registration may let the daemon pick the id; later ones (after the
 * daemon removed us) reuse it, and a 409 then means an earlier re-registration already won.
 * A removal settled every job we ran (requeued or failed), so a re-registration stops them.
 * The id is only written by the first one, before any other thread reads it.
 * Returns 0 when registered; otherwise -1 with *status the HTTP status (0: no answer).
 */
static int agent_register(struct agent *a, struct hodei_api *api, long *status)
{
    struct hodei_reply reply;
    json_t *body = json_pack("{s:I, s:I}", "cpu_m", (json_int_t)a->cpu_m,
                             "memory_mb", (json_int_t)a->memory_mb);
    if (a->id[0])
        json_object_set_new(body, "worker_id", json_string(a->id));

    pthread_mutex_lock(&a->register_lock);
    int again = a->registered;
    int64_t sent_ms = now_ms();
    int rc = hodei_api_call(api, "POST", "/workers", body, REQUEST_TIMEOUT_MS, &reply);
    const char *id = json_string_value(json_object_get(reply.body, "id"));
    if (rc == 0 && !again && id && hodei_id_valid(id, strlen(id)))
        snprintf(a->id, sizeof a->id, "%s", id);
    if (rc == 0 && (!id || strcmp(id, a->id) != 0)) {
        log_msg("error", "registration reply names another worker id");
        rc = -1;
    } else if (rc == 0) {
        log_msg("info", "%s as %s (cpu_m=%ld memory_mb=%ld)",
                again ? "re-registered" : "registered", a->id, a->cpu_m, a->memory_mb);
        drop_unlisted_jobs(a, NULL, sent_ms);
    } else if (again && reply.status == 409) {
        rc = 0;
    } else {
        log_msg("error", "registration failed: %s", reply.error);
    }
    a->registered |= rc == 0;
    pthread_mutex_unlock(&a->register_lock);
    *status = reply.status;
    hodei_reply_clear(&reply);
    json_decref(body);
    return rc;
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
    int64_t sent_ms = now_ms();
    int rc = path ? hodei_api_call(api, "POST", path, body, REQUEST_TIMEOUT_MS, &reply) : -1;
    if (rc == 0) {
        json_t *listed = json_object_get(reply.body, "jobs");
        if (json_is_array(listed))
            drop_unlisted_jobs(a, listed, sent_ms);
    } else if (path && reply.status == 404) {
        log_msg("warn", "the scheduler no longer knows worker %s", a->id);
        long status;
        rc = agent_register(a, api, &status);
    } else if (path) {
        log_msg("warn", "heartbeat failed: %s", reply.error);
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
    next->tv_sec += interval_ms / 1000;
    next->tv_nsec += (interval_ms % 1000) * 1000000L;
    if (next->tv_nsec >= 1000000000L) {
        next->tv_sec++;
        next->tv_nsec -= 1000000000L;
    }
    if (next->tv_sec < now.tv_sec || (next->tv_sec == now.tv_sec && next->tv_nsec < now.tv_nsec)) {
        *next = now;
        heartbeat_next(next, interval_ms);
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
        while (!a->heartbeat_stop && pthread_cond_timedwait(&a->changed, &a->lock, &next) != ETIMEDOUT)
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

/* Starts `/bin/sh -c command` as the leader of a new process group; 0 or an errno value. */
static int job_spawn(const char *command, pid_t *pid)
{
    posix_spawnattr_t attr;
    posix_spawn_file_actions_t files;
    sigset_t none, defaults;
    char *argv[] = { "sh", "-c", (char *)command, NULL };

    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGPIPE);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                    POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawn_file_actions_init(&files);
    posix_spawn_file_actions_addopen(&files, STDIN_FILENO, "/dev/null", O_RDONLY, 0);

    int err = posix_spawn(pid, "/bin/sh", &files, &attr, argv, environ);

    posix_spawn_file_actions_destroy(&files);
    posix_spawnattr_destroy(&attr);
    return err;
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
 * cancellation; the leader is reaped before returning.
 */
static struct job_outcome job_wait(const struct job_run *run, pid_t pid, int pidfd)
{
    struct job_outcome out = { .end = JOB_EXITED };
    int64_t timeout_at = run->timeout_s > 0 ? now_ms() + run->timeout_s * 1000 : INT64_MAX;
    int64_t stop_at = INT64_MAX;

    for (;;) {
        struct pollfd fds[3] = { { .fd = pidfd, .events = POLLIN },
                                 { .fd = run->cancel_fd, .events = POLLIN },
                                 { .fd = run->agent->stop_fd, .events = POLLIN } };
        int64_t deadline = timeout_at < stop_at ? timeout_at : stop_at;
        int wait_ms = -1;
        if (deadline != INT64_MAX) {
            int64_t left = deadline - now_ms();
            wait_ms = left > 0 ? (int)left : 0;
        }
        int n = poll(fds, stop_at == INT64_MAX ? 3 : 2, wait_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0 && fds[0].revents)
            break;
        if (n > 0 && fds[1].revents) {
            out.end = JOB_CANCELLED;
            log_msg("info", "job %s: the scheduler dropped it, terminating it", run->id);
            terminate_group(pid, pidfd);
            break;
        }
        if (n > 0 && fds[2].revents) {
            stop_at = now_ms() + SHUTDOWN_GRACE_MS;
            continue;
        }
        if (n == 0 && now_ms() >= deadline) {
            out.end = deadline == timeout_at ? JOB_TIMED_OUT : JOB_STOPPED;
            log_msg("info", "job %s: %s, terminating it", run->id,
                    out.end == JOB_TIMED_OUT ? "timeout reached" : "shutdown grace over");
            terminate_group(pid, pidfd);
            break;
        }
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    out.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return out;
}

static struct job_outcome job_execute(const struct job_run *run)
{
    pid_t pid;
    int err = job_spawn(run->command, &pid);
    if (err) {
        log_msg("error", "job %s: cannot start /bin/sh: %s", run->id, strerror(err));
        return (struct job_outcome){ .end = JOB_SPAWN_FAILED };
    }
    int pidfd = pidfd_open(pid, 0);
    if (pidfd < 0) {
        log_msg("error", "job %s: pidfd_open: %s", run->id, strerror(errno));
        kill(-pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return (struct job_outcome){ .end = JOB_SPAWN_FAILED };
    }
    log_msg("info", "job %s: running (pid %d, timeout %lds)", run->id, (int)pid, run->timeout_s);
    struct job_outcome out = job_wait(run, pid, pidfd);
    close(pidfd);
    return out;
}

/* The request that reports an outcome: succeed, or fail with its error_type. */
static json_t *outcome_body(const struct agent *a, const struct job_outcome *out, const char **verb)
{
    static const enum hodei_error_type error_of[] = {
        [JOB_EXITED] = HODEI_ERR_EXIT_CODE, [JOB_TIMED_OUT] = HODEI_ERR_TIMEOUT,
        [JOB_STOPPED] = HODEI_ERR_WORKER_LOST, [JOB_CANCELLED] = HODEI_ERR_CANCELLED,
        [JOB_SPAWN_FAILED] = HODEI_ERR_SPAWN_ERROR,
    };
    json_t *body = json_pack("{s:s}", "worker_id", a->id);
    if (out->end == JOB_EXITED && out->exit_code == 0) {
        *verb = "/succeed";
        json_object_set_new(body, "exit_code", json_integer(0));
        return body;
    }
    *verb = "/fail";
    json_object_set_new(body, "error_type", json_string(hodei_error_type_names[error_of[out->end]]));
    if (out->end == JOB_EXITED)
        json_object_set_new(body, "exit_code", json_integer(out->exit_code));
    return body;
}

/* Reports the outcome, retrying while the daemon cannot be reached. */
static void job_report(struct hodei_api *api, const struct job_run *run, const struct job_outcome *out)
{
    const char *verb;
    json_t *body = outcome_body(run->agent, out, &verb);
    char *path = hodei_api_path_id("/jobs", run->id, verb);
    char *text = json_dumps(body, JSON_COMPACT);
    struct hodei_reply reply = {0};

    for (int attempt = 1; path && attempt <= REPORT_ATTEMPTS; attempt++) {
        int rc = hodei_api_call(api, "POST", path, body, REQUEST_TIMEOUT_MS, &reply);
        if (rc == 0)
            log_msg("info", "job %s: reported %s %s", run->id, verb + 1, text ? text : "");
        else if (reply.status == 409)   /* e.g. the scheduler timed it out or cancelled it first */
            log_msg("info", "job %s: already settled by the scheduler (%s)", run->id, reply.error);
        else
            log_msg("warn", "job %s: reporting %s failed: %s", run->id, verb + 1, reply.error);
        long status = reply.status;
        hodei_reply_clear(&reply);
        if (rc == 0 || status != 0)   /* the daemon answered: retrying would not change it */
            break;
        pause_unless_stopped(-1, RETRY_PAUSE_MS);
    }
    free(text);
    free(path);
    json_decref(body);
}

static struct job_run *job_run_new(struct agent *a, const char *id, const char *command, long timeout_s)
{
    struct job_run *run = calloc(1, sizeof *run);
    if (!run)
        return NULL;
    *run = (struct job_run){ .agent = a, .id = strdup(id), .command = strdup(command),
                             .timeout_s = timeout_s,
                             .cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) };
    if (!run->id || !run->command || run->cancel_fd < 0) {
        if (run->cancel_fd >= 0)
            close(run->cancel_fd);
        free(run->id);
        free(run->command);
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
    free(run);
}

/* The scheduler accepted our start: the job counts as running here from now on. */
static void jobs_track(struct agent *a, struct job_run *run)
{
    pthread_mutex_lock(&a->lock);
    run->started_ms = now_ms();
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
    struct job_outcome out = job_execute(run);

    if (out.end == JOB_CANCELLED) {
        /* the scheduler has settled this job already: there is nothing to report */
    } else if (hodei_api_open(&api, a->api_url) == 0) {
        job_report(&api, run, &out);
        hodei_api_close(&api);
    } else {
        log_msg("error", "job %s: cannot set up the HTTP client to report", run->id);
    }
    jobs_untrack(a, run);
    job_run_free(run);
    return NULL;
}

/* --- assignments ----------------------------------------------------------------------------- */

/* POST /jobs/{id}/start; 0 when the scheduler lets us run it. */
static int job_start(struct agent *a, struct hodei_api *api, const char *id)
{
    struct hodei_reply reply;
    json_t *body = json_pack("{s:s}", "worker_id", a->id);
    char *path = hodei_api_path_id("/jobs", id, "/start");
    int rc = path ? hodei_api_call(api, "POST", path, body, REQUEST_TIMEOUT_MS, &reply) : -1;
    if (rc < 0 && path)
        log_msg(reply.status == 409 ? "info" : "warn", "job %s: not started: %s", id, reply.error);
    if (path)
        hodei_reply_clear(&reply);
    free(path);
    json_decref(body);
    return rc;
}

/* Takes one assigned job: tells the daemon it starts, then runs it on a thread of its own. */
static void job_take(struct agent *a, struct hodei_api *api, json_t *job)
{
    const char *id = json_string_value(json_object_get(job, "id"));
    const char *command = json_string_value(json_object_get(job, "command"));
    json_int_t timeout_s = json_integer_value(json_object_get(job, "timeout_s"));
    if (!id || !command) {
        log_msg("warn", "ignoring an assignment without id or command");
        return;
    }
    if (job_start(a, api, id) < 0)
        return;

    struct job_run *run = job_run_new(a, id, command, (long)timeout_s);
    pthread_t t;
    if (run)
        jobs_track(a, run);
    if (!run || start_thread(&t, job_main, run, 1) < 0) {
        struct job_run unrun = { .agent = a, .id = (char *)id };
        struct job_outcome failed = { .end = JOB_SPAWN_FAILED };
        log_msg("error", "job %s: no resources to run it", id);
        job_report(api, run ? run : &unrun, &failed);
        if (run) {
            jobs_untrack(a, run);
            job_run_free(run);
        }
    }
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
    int rc = hodei_api_call(poll_api, "GET", path, NULL, a->poll_wait_s * 1000 + REQUEST_TIMEOUT_MS,
                            &reply);
    free(path);
    if (rc == 0) {
        size_t i;
        json_t *job;
        json_array_foreach(json_object_get(reply.body, "jobs"), i, job)
            job_take(a, api, job);
    } else if (!stop_requested) {
        log_msg("warn", "polling assignments failed: %s", reply.error);
        long status;
        if (reply.status == 404)
            agent_register(a, api, &status);
        else
            pause_unless_stopped(a->stop_fd, RETRY_PAUSE_MS);
    }
    hodei_reply_clear(&reply);
}

/* After a stop signal: job threads kill what outlives the grace; wait for them, then stop beating. */
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
            "usage: hodei-worker --api URL [--id ID] [--cpu-m N] [--memory-mb N]\n"
            "                    [--poll-wait S] [--heartbeat-ms N]\n"
            "  --api URL          scheduler base URL, e.g. http://127.0.0.1:8080\n"
            "  --id ID            worker id ([A-Za-z0-9._:-]{1,64}); the scheduler picks one if absent\n"
            "  --cpu-m N          CPU capacity in millicores (default: online CPUs x 1000)\n"
            "  --memory-mb N      memory capacity in MB (default: MemTotal)\n"
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

/* 0 when the arguments are valid (a filled in), -1 after printing why. */
static int parse_args(int argc, char **argv, struct agent *a)
{
    enum { OPT_API = 1, OPT_ID, OPT_CPU, OPT_MEM, OPT_WAIT, OPT_HEARTBEAT };
    static const struct option options[] = {
        { "api", required_argument, NULL, OPT_API },
        { "id", required_argument, NULL, OPT_ID },
        { "cpu-m", required_argument, NULL, OPT_CPU },
        { "memory-mb", required_argument, NULL, OPT_MEM },
        { "poll-wait", required_argument, NULL, OPT_WAIT },
        { "heartbeat-ms", required_argument, NULL, OPT_HEARTBEAT },
        { NULL, 0, NULL, 0 },
    };
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
    if (bad)
        usage();
    return bad ? -1 : 0;
}

static int agent_init(struct agent *a)
{
    pthread_condattr_t cattr;
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&a->changed, &cattr);
    pthread_condattr_destroy(&cattr);
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
