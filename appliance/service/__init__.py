"""Running the daemon as a service: a systemd unit (Linux) or a launchd agent (macOS), rendered from the
templates in packaging/ and managed through systemctl or launchctl."""
