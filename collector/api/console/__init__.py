"""The web console's static files (HTML, CSS, JavaScript: no build step), shipped as package
data and served by collector.api.app."""
