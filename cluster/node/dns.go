package main

import (
	"fmt"
	"strings"
)

// resolvConf is what the kubelet writes for dnsPolicy ClusterFirst.
func resolvConf(namespace, domain, server string) string {
	return fmt.Sprintf("search %s.svc.%s svc.%s %s\nnameserver %s\noptions ndots:5\n",
		namespace, domain, domain, domain, server)
}

// hostsFile is the kubelet's managed /etc/hosts: localhost entries and the pod itself
// (with its FQDN when the pod sets hostname and subdomain).
func hostsFile(podName, hostname, subdomain, namespace, domain, ip string) string {
	var b strings.Builder
	b.WriteString("# Kubernetes-managed hosts file (sms-node).\n")
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
	if hostname == "" {
		hostname = podName
	}
	if ip != "" {
		if subdomain != "" {
			fmt.Fprintf(&b, "%s\t%s.%s.%s.svc.%s\t%s\n", ip, hostname, subdomain, namespace, domain, hostname)
		} else {
			fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
		}
	}
	return b.String()
}
