-- chord_report: report a chord member's result (or, with on_error="include", its error) to
-- the chord on another queue, before the member is acked or dead-lettered there (forward-
-- then-ack). The member that fills the last slot adds the callback in the same step.
-- @flags allow-oom
-- KEYS[1] chord hash, KEYS[2] callback ready stream, KEYS[3] callback record
-- ARGV[1] member index, ARGV[2] its result JSON, ARGV[3] chord size, ARGV[4] callback level
-- returns 0 (a repeated report, or the chord is gone), 1 (stored), 2 (stored; callback added)
-- @include workflow
return chord_add(KEYS[1], ARGV[1], ARGV[2], ARGV[3], KEYS[2], KEYS[3], ARGV[4])
