// Starting and reaping child processes, shared by `strait launch` (its ranks) and `strait sweep`
// (its cells): both need a child in its own process group that dies with its parent, with its
// output on descriptors of the parent's choosing.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace strait::launch {

// Forks and executes `program` with `argv` (argv[0] included) and the environment `envp`
// ("NAME=value" entries). The child:
//  - runs in a process group of its own (pgid = its pid), so the parent can signal it together
//    with everything it starts (kill(-pid, ...)), and a terminal's Ctrl-C, which reaches the
//    parent's group, does not reach the child twice (directly and forwarded);
//  - gets `parent_death_signal` when the thread that called this ends (a parent killed outright
//    cannot stop its children itself): SIGKILL for ranks, SIGTERM for cells, which then write a
//    checkpoint;
//  - reads stdin from /dev/null (a background group reading the terminal would be stopped) and
//    writes stdout and stderr to `stdout_fd` and `stderr_fd`;
//  - starts with default handlers for SIGINT, SIGTERM and SIGCHLD (the parents' handlers write
//    into the parents' own pipes) and no blocked signals.
// Throws strait::Error if fork fails; a program that cannot be executed exits with status 127
// after one line on `stderr_fd`.
pid_t spawn_process(const std::string& program, std::vector<std::string> argv, std::vector<std::string> envp,
                    int stdout_fd, int stderr_fd, int parent_death_signal);

// The environment of this process with the "NAME=value" `overrides` replacing inherited values
// of the same names.
std::vector<std::string> environment_with(const std::vector<std::pair<std::string, std::string>>& overrides);

// A wait status as a shell exit status: the code of a normal exit, 128 + the signal of a kill.
int exit_code(int wait_status);

// "signal 15 (Terminated)".
std::string describe_signal(int signal);

// "exited with status 1" or "was killed by signal 9 (Killed)".
std::string describe_exit(int wait_status);

}  // namespace strait::launch
