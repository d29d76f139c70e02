#!/bin/sh
# The container listens on all its addresses, and the daemon serves those only with an API key: on the
# first `serve` without one, make one (kept in the volume) and print it once, to the container's log.
set -eu
if [ "$#" -eq 0 ]; then
    set -- serve
fi
if [ "$1" = serve ] && [ -z "${APPLIANCE_SERVER__API_KEY:-}" ] \
    && [ "${APPLIANCE_SERVER__INSECURE_NO_AUTH:-false}" != true ] && [ ! -s "${APPLIANCE_HOME}/api-keys" ]; then
    key=$(appliance key new --name container 2>/dev/null)
    echo "llm-appliance: made an API key, kept in ${APPLIANCE_HOME}/api-keys: ${key}" >&2
fi
exec appliance "$@"
