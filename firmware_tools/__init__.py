"""Field tools for technicians: meter simulators, bus scans, meter set-up, key provisioning."""
