// Package ansible holds the Ansible module that runs graft on many hosts
// (library/livepatch.py, README.md) and its test: ansible-core drives two
// local hosts, serial: 1, each patching its own real server.
package ansible
