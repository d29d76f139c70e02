"""Remote GPU hosts: where they are (config or Tailscale), how they are doing, and when to use them."""
