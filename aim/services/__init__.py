"""Domain services. Fronts (API, dashboard, CLI, simulator) call these; these call the data layer."""
