"""The calls that start a request-ID task, by the name the audit trail gives them (CloudAudit's EventName):
discovery finds those products' operations by sweeping the audit trail for these names
(`exporter.catalogue.auditlists`); each product's entry in `products` names its tuple (`audit_events`).
"""

from __future__ import annotations

# A request-ID task is listed nowhere but in the audit trail (CloudAudit's DescribeEvents): discovery sweeps
# it for the calls below (`audit_events`; exporter.catalogue.auditlists).
# CLB's calls that start a task polled by its RequestId: those whose documentation (the SDK's clb_client.py
# docstrings, tencentcloud-sdk-python-clb 3.1.194) says to pass the RequestId to DescribeTaskStatus, and
# those the Terraform provider polls so (services/clb: waitForTaskFinish on the call's RequestId):
# CreateLoadBalancer, ModifyFunctionTargets, ModifyLoadBalancerMixIpTarget and
# SetCustomizedConfigForLoadBalancer.
# The provider's AddCustomizedConfig, ModifyCustomizedConfig and DeleteCustomizedConfig are not in the SDK.
CLB_AUDITED_CALLS = (
    "AssociateTargetGroups",
    "AutoRewrite",
    "BatchModifyTargetWeight",
    "CloneLoadBalancer",
    "CreateListener",
    "CreateLoadBalancer",
    "CreateLoadBalancerSnatIps",
    "CreateRule",
    "DeleteListener",
    "DeleteLoadBalancer",
    "DeleteLoadBalancerListeners",
    "DeleteLoadBalancerSnatIps",
    "DeleteRewrite",
    "DeleteRule",
    "DeregisterFunctionTargets",
    "DeregisterTargetGroupInstances",
    "DeregisterTargets",
    "DeregisterTargetsFromClassicalLB",
    "DisassociateTargetGroups",
    "ManualRewrite",
    "ModifyDomain",
    "ModifyDomainAttributes",
    "ModifyFunctionTargets",
    "ModifyListener",
    "ModifyLoadBalancerAttributes",
    "ModifyLoadBalancerMixIpTarget",
    "ModifyLoadBalancerSla",
    "ModifyRule",
    "ModifyTargetGroupInstancesPort",
    "ModifyTargetGroupInstancesWeight",
    "ModifyTargetPort",
    "ModifyTargetWeight",
    "RegisterFunctionTargets",
    "RegisterTargetGroupInstances",
    "RegisterTargets",
    "RegisterTargetsWithClassicalLB",
    "SetCustomizedConfigForLoadBalancer",
    "SetLoadBalancerStartStatus",
)
# VPC's calls whose documentation (the SDK's vpc_client.py docstrings, tencentcloud-sdk-python-vpc 3.1.193)
# says to poll DescribeVpcTaskResult with their RequestId; the Terraform provider does so after
# AssignIpv6Addresses, AttachNetworkInterface, DetachNetworkInterface, UnassignIpv6Addresses and
# UnassignPrivateIpAddresses (services/vpc). Left out: the four Describe*Instances reads whose result comes
# the same way (a query's answer, not an operation on a resource).
VPC_AUDITED_CALLS = (
    "AssignIpv6Addresses",
    "AssignPrivateIpAddresses",
    "AssociateDhcpIpWithAddressIp",
    "AttachClassicLinkVpc",
    "AttachNetworkInterface",
    "CreateAndAttachNetworkInterface",
    "CreateNetworkInterface",
    "CreateVpnConnection",
    "DeleteAddressTemplate",
    "DeleteAddressTemplateGroup",
    "DeleteDhcpIp",
    "DeleteHaVip",
    "DeleteNetworkInterface",
    "DeleteServiceTemplate",
    "DeleteServiceTemplateGroup",
    "DetachClassicLinkVpc",
    "DetachNetworkInterface",
    "DisassociateDhcpIpWithAddressIp",
    "HaVipAssociateAddressIp",
    "HaVipDisassociateAddressIp",
    "MigrateNetworkInterface",
    "MigratePrivateIpAddress",
    "ModifyAddressTemplateAttribute",
    "ModifyAddressTemplateGroupAttribute",
    "ModifyServiceTemplateAttribute",
    "ModifyServiceTemplateGroupAttribute",
    "UnassignIpv6Addresses",
    "UnassignPrivateIpAddresses",
)
