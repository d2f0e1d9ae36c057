"""The kernel's netlink and rtnetlink numbers netemu uses, each defined once, by header."""

# <linux/netlink.h>
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_ACK_TLVS = 0x200  # in an error message: extended-ack attributes follow
NLM_F_DUMP_INTR = 0x10  # a dump the kernel says was disturbed by a change: it may lack entries
NLM_F_DUMP_FILTERED = 0x20  # the kernel applied the dump request's filter itself
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12  # dump requests' filters are honoured (address and route dumps by link)
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>: a receive buffer above rmem_max (we are root)

# <linux/rtnetlink.h>
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
RTN_UNICAST = 1
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC, RTA_MULTIPATH, RTA_TABLE = 1, 4, 5, 7, 9, 15

# <linux/if_link.h>
IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO = 3, 4, 5, 10, 18
IFLA_IFALIAS, IFLA_NET_NS_FD, IFLA_EXT_MASK = 20, 28, 29
RTEXT_FILTER_SKIP_STATS = 1 << 3  # answers without the counters: a quarter smaller
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFLA_MACVLAN_MODE = 1
MACVLAN_MODE_BRIDGE = 4

# <linux/if.h>
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000

# <linux/if_addr.h>
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
IFA_F_NODAD = 0x02
