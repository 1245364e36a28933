/*
 * limits.h — the sizes the daemon and its clients agree on.  The daemon enforces them; the
 * clients stay within them.
 */
#ifndef HODEI_CORE_LIMITS_H
#define HODEI_CORE_LIMITS_H

/* Largest request body the API reads (nginx's client_max_body_size says the same). */
#define HODEI_BODY_MAX     (64 * 1024)
/* Bytes of a job's output (stdout and stderr, as written) that the agent keeps and reports:
 * the tail.  Base64 in the report, so a report stays well within HODEI_BODY_MAX. */
#define HODEI_OUTPUT_TAIL  (16 * 1024)

#endif
