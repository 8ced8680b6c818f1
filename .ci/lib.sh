# shellcheck shell=bash
# Helpers for .ci/run: running lanes, skipping them loudly, installing what they need.
# Sourced, not executed.

# Each lane runs in its own subshell so that one failing lane does not hide the results of
# the others; these hold what the subshells report back.
CI_STATE=$(mktemp -d)
trap 'rm -rf "$CI_STATE"' EXIT
LANE_NAMES=()
LANE_RESULTS=()
LANE_SECONDS=()
LANE_NOTES=()
TESTS_PASSED=0
TESTS_FAILED=0

rule() {
    printf '%s\n' "========================================================================"
}

# run_lane NAME FUNCTION DESCRIPTION
run_lane() {
    local name=$1 fn=$2 description=$3
    if ((${#SELECTED_LANES[@]} > 0)) && ! [[ " ${SELECTED_LANES[*]} " == *" $name "* ]]; then
        return 0
    fi
    rule
    printf '== lane %s: %s\n' "$name" "$description"
    rule

    LANE_NAME=$name LANE_DIR=$CI_STATE/$name
    mkdir -p "$LANE_DIR"
    local start=$SECONDS rc
    # `set -e` is ignored inside anything run as a condition (`if`, `||`), so the
    # subshell is run bare with errexit switched on inside it.
    set +e
    (
        set -e
        "$fn"
    )
    rc=$?
    set -e

    local result note=""
    if [[ -f $LANE_DIR/skipped ]]; then
        result=SKIPPED
        note=$(<"$LANE_DIR/skipped")
    elif ((rc == 0)); then
        result=PASS
    else
        result=FAIL
        note="exit status $rc"
    fi
    if [[ -f $LANE_DIR/tests ]]; then
        local passed failed ignored
        read -r passed failed ignored <"$LANE_DIR/tests"
        TESTS_PASSED=$((TESTS_PASSED + passed))
        TESTS_FAILED=$((TESTS_FAILED + failed))
        note="${note:+$note; }$passed passed, $failed failed, $ignored ignored"
    fi
    LANE_NAMES+=("$name")
    LANE_RESULTS+=("$result")
    LANE_SECONDS+=($((SECONDS - start)))
    LANE_NOTES+=("$note")
    printf '== lane %s: %s (%ss)\n\n' "$name" "$result" "$((SECONDS - start))"
}

# skip REASON: ends the current lane as SKIPPED. Only for things outside the project's
# control (a download that failed, no way to become root), never for a failing check.
skip() {
    printf '%s\n' "$*" >"$LANE_DIR/skipped"
    printf 'SKIPPED %s: %s\n' "$LANE_NAME" "$*"
    exit 0
}

# run_tests CMD...: runs a cargo test command, adds its totals to the lane's for the summary,
# and fails the lane if it fails or if it ran no test at all.
run_tests() {
    local log=$LANE_DIR/test.log
    local rc=0
    printf '+ %s\n' "$*"
    "$@" 2>&1 | tee "$log" || rc=$?
    local passed
    passed=$(count_tests "$log")
    ((rc == 0)) || return "$rc"
    if ((passed == 0)); then
        echo "error: '$*' ran no test" >&2
        return 1
    fi
}

# count_tests LOG: adds the `test result:` totals of a cargo test log to the lane's totals
# and prints how many passed in that log.
count_tests() {
    local totals=$LANE_DIR/tests passed failed ignored p=0 f=0 g=0
    read -r passed failed ignored < <(awk '/^test result:/ {
            for (i = 2; i <= NF; i++) {
                if ($i == "passed;") p += $(i - 1)
                if ($i == "failed;") f += $(i - 1)
                if ($i == "ignored;") g += $(i - 1)
            }
         }
         END { print p + 0, f + 0, g + 0 }' "$1")
    [[ -f $totals ]] && read -r p f g <"$totals"
    echo "$((p + passed)) $((f + failed)) $((g + ignored))" >"$totals"
    echo "$passed"
}

# need_nightly: makes sure the nightly toolchain exists (a minimal one if not); skips the
# lane if it cannot be installed.
need_nightly() {
    command -v rustup >/dev/null || skip "rustup not found, cannot use the nightly toolchain"
    rustup run nightly rustc --version >/dev/null 2>&1 && return 0
    timeout 900 rustup toolchain install nightly --profile minimal ||
        skip "rustup toolchain install nightly failed"
}

# print_summary: the lane table, then the test totals; returns non-zero if a lane failed.
print_summary() {
    local i name failed=0
    rule
    echo "== summary"
    rule
    for i in "${!LANE_NAMES[@]}"; do
        printf '%-8s %-13s %5ss  %s\n' "${LANE_RESULTS[i]}" "${LANE_NAMES[i]}" \
            "${LANE_SECONDS[i]}" "${LANE_NOTES[i]}"
        [[ ${LANE_RESULTS[i]} != FAIL ]] || failed=1
    done
    for name in "${SELECTED_LANES[@]}"; do
        if ! [[ " ${LANE_NAMES[*]} " == *" $name "* ]]; then
            echo "FAIL     unknown lane '$name'"
            failed=1
        fi
    done
    echo "tests: $TESTS_PASSED passed, $TESTS_FAILED failed"
    return "$failed"
}

# as_root CMD...: CI runs as root; a developer's machine may need sudo.
as_root() {
    if ((EUID == 0)); then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "need root or sudo to run: $*" >&2
        return 1
    fi
}

# apt_install PKG...: installs the Debian packages not installed yet. Updates the package
# lists first, since a fresh machine may have none.
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        if [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) != "install ok installed" ]]; then
            missing+=("$pkg")
        fi
    done
    ((${#missing[@]} > 0)) || return 0
    echo "+ apt-get install ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get -o DPkg::Lock::Timeout=300 -q update &&
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get -o DPkg::Lock::Timeout=300 -q install -y --no-install-recommends "${missing[@]}"
}

# rustup_add target|component NAME...: adds rustup targets or components; a failed
# download skips the lane.
rustup_add() {
    local kind=$1
    shift
    command -v rustup >/dev/null || skip "rustup not found, cannot add $kind $*"
    local out
    if ! out=$(timeout 600 rustup "$kind" add "$@" 2>&1); then
        printf '%s\n' "$out"
        # rustup may follow its error line with a backtrace; the error line is the reason.
        local reason
        reason=$(grep -m 1 '^error' <<<"$out" || tail -n 1 <<<"$out")
        skip "rustup $kind add $* failed: $reason"
    fi
    printf '%s\n' "$out"
}
