"""MQTT for Home Assistant: topic names, discovery payloads and the client bridge."""
